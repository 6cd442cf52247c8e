"""``python -m node`` is the ``idlegrid`` command (handy before the entry point is installed)."""

from node.cli import main

main()
