"""Dataset transfer between nodes: a server that offers chunks, a multi-source fetcher.

The interface the market can use in place of ``node.market.blobshare`` (see README, "Data"):

* :class:`node.transfer.server.TransferServer` ``.register()``, ``.offer(id, manifest)``,
  ``.grant(peer, id)`` on the holder;
* :func:`node.transfer.fetcher.fetch` on the receiver, then
  :func:`storage.transfer_files.materialize` to write the files out.
"""
