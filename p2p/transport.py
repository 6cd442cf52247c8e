"""py-libp2p's TCP transport, remembering every socket it hands out so that all get closed.

When the scope around a host is cancelled, the library's own connection tasks are cancelled
with it, part-way through closing: a connection is then marked closed while its socket is
still open, and the library's later ``close()`` calls skip it (the socket is left to the
garbage collector). Rather than depend on the library's bookkeeping, :class:`TrackedTCP`
keeps a weak reference to each raw connection it dials or accepts, and
:meth:`TrackedTCP.close_connections` closes whatever is left once the host has closed.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

from libp2p.abc import IRawConnection
from libp2p.custom_types import THandler
from libp2p.io.abc import ReadWriteCloser
from libp2p.transport.tcp.tcp import TCP, TCPListener
from multiaddr import Multiaddr

logger = logging.getLogger(__name__)


class TrackedTCP(TCP):
    """A TCP transport whose sockets can all be closed at the end, whatever state they are in."""

    def __init__(self) -> None:
        super().__init__()
        # Weak: a connection the library closed and dropped must not be kept alive here.
        self._open: weakref.WeakSet[IRawConnection | ReadWriteCloser] = weakref.WeakSet()

    async def dial(self, maddr: Multiaddr) -> IRawConnection:
        """Dial as the library does, and remember the connection."""
        conn = await super().dial(maddr)
        self._open.add(conn)
        return conn

    async def dial_with_source(self, maddr: Multiaddr, source: tuple[str, int]) -> IRawConnection:
        """Dial from a given source address (hole punching), and remember the connection."""
        conn = await super().dial_with_source(maddr, source)
        self._open.add(conn)
        return conn

    def create_listener(self, handler_function: THandler) -> TCPListener:
        """A listener that remembers each accepted connection before handing it on."""

        async def remembering(stream: ReadWriteCloser) -> None:
            self._open.add(stream)
            await handler_function(stream)

        return super().create_listener(remembering)

    async def close_connections(self) -> None:
        """Close every connection still referenced; closing a closed one is harmless."""
        for conn in list(self._open):
            with contextlib.suppress(Exception):
                await conn.close()
        self._open.clear()
