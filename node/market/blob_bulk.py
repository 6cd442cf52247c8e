"""Task files over the transfer layer's bulk channel: the blob protocol's fast path.

The blob protocol's 1 MiB request/response pieces ride py-libp2p streams, about 20 MB/s on
this machine (``bench/blobs.py``): a 2 GB checkpoint would take minutes to move. Where the
holder has a bulk listener (:mod:`node.transfer.channel`: plain TCP beside libp2p, opened
with a one-time ticket's token), a fetcher asks it over the blob protocol for a ticket,
``{"bulk": hash, "offset": n}``; the holder checks the grant exactly as for a piece and
answers with a ticket whose channel streams the ciphertext from ``offset`` to its end, in
frames of up to :data:`BULK_PIECE_BYTES`, straight from the file. A blob is ciphertext, so the
channel is a plain one: sealing it again cost each end 0.3 ms per MiB. The fetcher hashes
what comes as it does pieces, so the channel is trusted for nothing but speed; who may read a
blob does not change either (its key still goes over libp2p, sealed to the fetcher, after a
grant).

A holder with no bulk listener (reached only through a relay), or an older node, answers the
ticket request with an error, and the fetcher takes pieces; so does one whose channel breaks
midway, from where it broke.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

from node.transfer.channel import ChunkChannel
from node.transfer.run import open_bulk
from node.transfer.server import ServeChannel, TransferServer
from p2p.framing import HEADER, StreamFailed
from p2p.host import Host

BULK_PIECE_BYTES = 4 << 20  # per sealed frame: big enough that framing costs nothing
SEND_TIMEOUT_S = 120.0  # a 4 MiB frame at 35 KB/s: a fetcher slower than that takes pieces


class BulkCarrier(Protocol):
    """What the blob service needs of a bulk channel (none in the market's in-memory sims)."""

    def ticket(self, peer: str, serve: ServeChannel) -> dict[str, Any]:
        """A ticket for ``peer``, whose channel ``serve`` serves.

        Raises:
            RequestRejected: no bulk listener here.
        """
        ...

    async def open(
        self, peer: str, addrs: Sequence[str], protocol: str, request: dict[str, Any]
    ) -> ChunkChannel:
        """A channel to ``peer``, from the ticket ``request`` to ``protocol`` returns.

        Raises:
            RequestError: no ticket; DialError, OSError: no connection.
        """
        ...


class TransferBulk:
    """:class:`BulkCarrier` on the node's transfer server and libp2p host."""

    def __init__(
        self,
        host: Host,
        server: TransferServer,
        connect: Callable[[str, Sequence[str]], Awaitable[None]],
    ) -> None:
        self.host, self.server, self.connect = host, server, connect

    def ticket(self, peer: str, serve: ServeChannel) -> dict[str, Any]:
        return self.server.issue_ticket(peer, serve, sealed=False)  # a task's files: ciphertext

    async def open(
        self, peer: str, addrs: Sequence[str], protocol: str, request: dict[str, Any]
    ) -> ChunkChannel:
        await self.connect(peer, addrs)  # the ticket's stream needs a connection to ride
        return await open_bulk(self.host, peer, request, protocol, ciphertext=True)


def _load(fd: int, offset: int, count: int) -> None:
    """Brings a range of the file into the page cache, so that sending it from there (a
    ``sendfile`` on the event loop) never waits on the disk: a checkpoint of gigabytes may
    not have been read in a long time."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
    with mmap.mmap(fd, offset + count - start, flags=flags, prot=mmap.PROT_READ, offset=start):
        pass


async def send_blob(path: Path, offset: int, channel: ChunkChannel) -> None:
    """The holder's side: ``path``'s bytes from ``offset`` to its end, then nothing more.

    Raises:
        StreamFailed: the fetcher went away, or stopped reading for
            :data:`SEND_TIMEOUT_S` (it resumes from its part, maybe elsewhere).
        OSError: the file went meanwhile (retention deleted it).
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        while offset < size:
            count = min(BULK_PIECE_BYTES, size - offset)
            await trio.to_thread.run_sync(_load, f.fileno(), offset, count)
            with trio.move_on_after(SEND_TIMEOUT_S):
                await channel.send_file(HEADER.pack(count), f.fileno(), offset, count)
                offset += count
                continue
            raise StreamFailed(f"the fetcher took no frame for {SEND_TIMEOUT_S:.0f} s")
