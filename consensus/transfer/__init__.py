"""Dataset transfer, the pure part: manifests and their validation, chunk layout, scheduling.

No I/O here: :mod:`storage.transfer_files` reads and writes the files, :mod:`node.transfer`
moves the chunks.
"""
