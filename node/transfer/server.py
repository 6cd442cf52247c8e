"""The holder's side: serves manifests and chunks of the datasets it offers, to whom it granted.

Knowing a dataset id is not enough to read it: a peer gets a dataset's manifest and chunks
only after :meth:`TransferServer.grant` (or from a server made with ``public=True``, as
``idlegrid data serve --public`` is). A chunk is read from the store verified against its
hash, so our own disk going bad is caught here rather than blamed on us by the receiver.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from consensus.codec import DEFAULT_LIMITS
from consensus.errors import Invalid
from consensus.transfer.manifest import Manifest
from node.transfer.channel import (
    KEY_BYTES,
    TOKEN_BYTES,
    Body,
    ChunkChannel,
    PlainChannel,
    SealedChannel,
    StreamChannel,
)
from node.transfer.probe import PROBE_BYTES, PROBE_PROTOCOL, probe_reply
from node.transfer.sealed import is_sealed
from node.transfer.wire import (
    BULK_PROTOCOL,
    CHUNKS_PROTOCOL,
    MANIFEST_PROTOCOL,
    MAX_CHUNK_FRAME,
    MAX_MANIFEST_FRAME,
    SAMPLE_BYTES,
    chunk_reply_frame,
    chunk_reply_head,
    pack_chunk,
    sample_compresses,
)
from p2p import reqresp
from p2p.framing import RequestError, decode_body, encode_frame
from p2p.host import Host
from p2p.reqresp import RequestRejected
from storage.blobs import BlobStore
from storage.errors import CorruptBlob

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # see node/daemon.py

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 60.0
NOT_FOUND = "not_found"
NOT_SEALED = "not_sealed"  # an open dataset's chunk asked for on a plain channel
TICKET_TTL_S = 30.0
MAX_BULK_PER_PEER = 8  # bulk channels open or promised to one peer at once
SERVE_AHEAD = 4  # replies prepared at once per channel
ANYONE = "*"  # a grant to every peer

ServeChannel = Callable[[ChunkChannel], Awaitable[None]]


class _Reply:
    """A reply being prepared: a whole frame, or the head of one whose payload is a file."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.frame = b""
        self.index = -1
        self.file: tuple[Path, int] | None = None  # a verified blob and its size, after frame


class TransferServer:
    """Offers datasets held in ``store`` over ``host``."""

    def __init__(self, host: Host, store: BlobStore, *, public: bool = False) -> None:
        self.host, self.store, self.public = host, store, public
        self._offered: dict[bytes, Manifest] = {}
        self._grants: set[tuple[str, bytes]] = set()
        # (peer, dataset) -> how many requesters lent it: a job's data shared with its other
        # workers, taken back when that requester's tasks here are forgotten
        self._lent: Counter[tuple[str, bytes]] = Counter()
        # token -> (peer, key (None: a plain channel), what serves the channel, expiry)
        self._tickets: dict[bytes, tuple[str, bytes | None, ServeChannel, float]] = {}
        self._channels: Counter[str] = Counter()  # bulk channels open, per peer
        self.bulk_port: int | None = None
        # Chunks sent per dataset offered now, for status and tests (withdraw clears it).
        self.served: Counter[bytes] = Counter()

    def register(self) -> None:
        reqresp.serve(self.host, MANIFEST_PROTOCOL, self._manifest, max_bytes=MAX_MANIFEST_FRAME)
        self.host.set_stream_handler(CHUNKS_PROTOCOL, self._chunks)
        reqresp.serve(self.host, BULK_PROTOCOL, self._ticket)
        reqresp.serve(self.host, PROBE_PROTOCOL, self._probe, max_bytes=4 * PROBE_BYTES)

    def offer(self, dataset_id: bytes, manifest: Manifest) -> None:
        """Serve this dataset (its chunks that the store holds) to granted peers."""
        self._offered[dataset_id] = manifest

    def grant(self, peer: str, dataset_id: bytes) -> None:
        """Serve ``dataset_id`` to ``peer`` (``ANYONE``: to every peer)."""
        self._grants.add((peer, dataset_id))

    def lend(self, peer: str, dataset_id: bytes) -> None:
        """Serve ``dataset_id`` to ``peer`` until as many :meth:`unlend` calls."""
        self._lent[(peer, dataset_id)] += 1

    def unlend(self, peer: str, dataset_id: bytes) -> None:
        """Takes back one :meth:`lend`; a grant (:meth:`grant`) is not touched."""
        key = (peer, dataset_id)
        if self._lent[key] <= 1:
            self._lent.pop(key, None)
        else:
            self._lent[key] -= 1

    def withdraw(self, dataset_id: bytes) -> None:
        """Serve ``dataset_id`` no more, to anyone (it is being removed here)."""
        self._offered.pop(dataset_id, None)
        self._grants = {g for g in self._grants if g[1] != dataset_id}
        self._lent = Counter({g: n for g, n in self._lent.items() if g[1] != dataset_id})
        self.served.pop(dataset_id, None)

    def offers(self, dataset_id: bytes) -> bool:
        return dataset_id in self._offered

    def _manifest_for(self, peer: str, dataset_id: Any) -> Manifest | None:
        if not isinstance(dataset_id, bytes):
            return None
        granted = (peer, dataset_id) in self._grants or (ANYONE, dataset_id) in self._grants
        granted = granted or (peer, dataset_id) in self._lent
        if not self.public and not granted:
            return None
        return self._offered.get(dataset_id)

    async def _probe(self, peer: str, payload: Any) -> Any:
        dataset_id = payload.get("d") if isinstance(payload, dict) else None
        return probe_reply(self._manifest_for(peer, dataset_id) is not None)

    async def _manifest(self, peer: str, payload: Any) -> Any:
        dataset_id = payload.get("d") if isinstance(payload, dict) else None
        manifest = self._manifest_for(peer, dataset_id)
        if manifest is None or not isinstance(dataset_id, bytes):
            raise RequestRejected(NOT_FOUND, "no such dataset for you")
        return {"m": await trio.to_thread.run_sync(self.store.get, dataset_id.hex())}

    async def _chunks(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        await self._serve_channel(peer, StreamChannel(stream))

    async def _serve_channel(self, peer: str, channel: ChunkChannel) -> None:
        """Answer requests in order, preparing up to SERVE_AHEAD replies at once (reading and
        compressing chunks in threads), so the channel never waits on our disk."""
        send, receive = trio.open_memory_channel[_Reply](SERVE_AHEAD)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_replies, channel, receive)
                async with send:
                    while True:
                        body = None
                        with trio.move_on_after(IDLE_TIMEOUT_S):
                            body = await channel.receive(4096)
                        if body is None:
                            break  # idle: finish what was asked, then close
                        reply = _Reply()
                        await send.send(reply)
                        nursery.start_soon(
                            functools.partial(self._prepare, reply, peer, body, plain=channel.plain)
                        )
        except* (RequestError, StreamError, EOFError) as group:
            log.debug("chunk channel from %s ended: %r", peer, group.exceptions[0])
        await channel.aclose()

    async def _send_replies(
        self, channel: ChunkChannel, receive: trio.MemoryReceiveChannel[_Reply]
    ) -> None:
        async for reply in receive:
            await reply.ready.wait()
            if reply.file is None:
                await channel.send(reply.frame)
            else:
                await _send_file(channel, reply.index, reply.frame, *reply.file)

    async def _prepare(self, reply: _Reply, peer: str, body: Body, *, plain: bool) -> None:
        try:
            await self._answer(reply, peer, decode_body(bytes(body), DEFAULT_LIMITS), plain=plain)
        except (Invalid, RequestError) as exc:
            reply.frame, reply.file = _refusal(-1, f"malformed: {exc}"[:100]), None
        reply.ready.set()

    async def run_bulk(
        self, *, task_status: TaskStatus[int | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept bulk connections (see :mod:`node.transfer.channel`) until cancelled.

        Listens on the IP of the host's first address; ``task_status`` gets the port, or None
        when the host listens nowhere (a node reached only through relays: no bulk channel,
        chunks go over the libp2p stream).
        """
        tcp = [a for a in self.host.addrs if a.startswith(("/ip4/", "/ip6/")) and "/tcp/" in a]
        if not tcp:
            task_status.started(None)
            await trio.sleep_forever()
        ip = tcp[0].split("/")[2]
        listeners = await trio.open_tcp_listeners(0, host=ip)
        self.bulk_port = listeners[0].socket.getsockname()[1]
        task_status.started(self.bulk_port)
        await trio.serve_listeners(self._bulk_connection, listeners)

    async def _ticket(self, peer: str, payload: Any) -> Any:
        dataset_id = payload.get("d") if isinstance(payload, dict) else None
        manifest = self._manifest_for(peer, dataset_id)
        if manifest is None:
            raise RequestRejected(NOT_FOUND, "no such dataset for you")
        serve = functools.partial(self._serve_channel, peer)
        return self.issue_ticket(peer, serve, sealed=not is_sealed(manifest))

    def issue_ticket(
        self, peer: str, serve: ServeChannel, *, sealed: bool = True
    ) -> dict[str, Any]:
        """A one-time ticket for ``peer`` to open a bulk channel, which ``serve`` then serves.

        Other request/response protocols hand these out too (the market's task files): the
        channel is ours, what travels on it is theirs. With ``sealed`` the ticket carries a
        key and every frame is sealed under it; without, for what is sealed end to end already,
        frames go as they are (:class:`~node.transfer.channel.PlainChannel`).

        Raises:
            RequestRejected: ``no_bulk``, when this node has no bulk listener (say, one
                reached only through relays), or ``busy``, when ``peer`` holds
                :data:`MAX_BULK_PER_PEER` channels and tickets already: the asker falls back
                to its libp2p stream.
        """
        if self.bulk_port is None:
            raise RequestRejected("no_bulk", "this holder has no bulk channel")
        now = trio.current_time()
        self._tickets = {t: v for t, v in self._tickets.items() if v[3] > now}
        held = sum(v[0] == peer for v in self._tickets.values()) + self._channels[peer]
        if held >= MAX_BULK_PER_PEER:  # each holds a socket and a task (and a file) here
            raise RequestRejected("busy", f"{held} bulk channels open or promised to you")
        token = secrets.token_bytes(TOKEN_BYTES)
        key = secrets.token_bytes(KEY_BYTES) if sealed else None
        self._tickets[token] = (peer, key, serve, now + TICKET_TTL_S)
        ticket = {"port": self.bulk_port, "token": token}
        return ticket if key is None else ticket | {"key": key}

    async def _bulk_connection(self, sock: trio.SocketStream) -> None:
        token = b""
        with trio.move_on_after(TICKET_TTL_S), contextlib.suppress(trio.BrokenResourceError):
            while len(token) < TOKEN_BYTES and (
                data := await sock.receive_some(TOKEN_BYTES - len(token))
            ):
                token += data
        ticket = self._tickets.pop(token, None)
        if ticket is None or ticket[3] < trio.current_time():
            await sock.aclose()
            return
        peer, key, serve, _ = ticket
        channel = PlainChannel(sock) if key is None else SealedChannel(sock, key, client=False)
        self._channels[peer] += 1
        try:
            await serve(channel)
        except* (RequestError, StreamError, OSError) as group:  # the asker left, or our disk
            log.debug("bulk channel ended: %r", group.exceptions[0])
        finally:
            self._channels[peer] -= 1
            if not self._channels[peer]:
                del self._channels[peer]
            await channel.aclose()

    async def _answer(self, reply: _Reply, peer: str, request: Any, *, plain: bool) -> None:
        """Prepares ``reply``: the chunk, or a refusal.

        On a ``plain`` channel only a sealed dataset's chunks are served (an open one's would
        cross the wire in the clear: a request injected on the path could ask for one), and
        one that would not compress goes as its verified file.
        """
        if not isinstance(request, dict) or not isinstance(request.get("i"), int):
            raise Invalid("chunk request", "expected {d: bytes, i: int}")
        reply.index = index = request["i"]
        manifest = self._manifest_for(peer, request.get("d"))
        if manifest is None or not 0 <= index < len(manifest.chunks):
            reply.frame = _refusal(index, NOT_FOUND)
            return
        if plain and not is_sealed(manifest):
            reply.frame = _refusal(index, NOT_SEALED)
            return
        digest = manifest.chunks[index].hash.hex()
        try:
            found = await self.chunk_file(digest) if plain else None
            if found is None:
                data = await self.read_chunk(digest)
                reply.frame = await trio.to_thread.run_sync(_chunk_frame, index, data)
            else:
                reply.frame, reply.file = chunk_reply_head(index, False, found[1]), found
        except (FileNotFoundError, CorruptBlob):
            reply.frame, reply.file = _refusal(index, NOT_FOUND), None
            return
        if request["d"] in self._offered:  # not withdrawn while it was read
            self.served[request["d"]] += 1

    async def read_chunk(self, digest: str) -> bytes:
        """The chunk's bytes from the store, verified (a test overrides this to lie)."""
        return await trio.to_thread.run_sync(self.store.get, digest)

    async def chunk_file(self, digest: str) -> tuple[Path, int] | None:
        """The chunk's file and size, verified, to be sent as it is; None for a chunk worth
        compressing, read and sent as a frame instead (a test overrides this to lie).

        Raises:
            FileNotFoundError, CorruptBlob: not here (a corrupt blob is quarantined).
        """
        return await trio.to_thread.run_sync(_incompressible_file, self.store, digest)


async def _send_file(channel: ChunkChannel, index: int, head: bytes, path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # removed since it was verified
        await channel.send(_refusal(index, NOT_FOUND))
        return
    try:
        await channel.send_file(head, fd, 0, size)
    finally:
        os.close(fd)


def _incompressible_file(store: BlobStore, digest: str) -> tuple[Path, int] | None:
    path = store.path(digest)
    size = path.stat().st_size
    if size <= SAMPLE_BYTES:
        return None  # small: read and packed as a frame, compressed if that pays
    with path.open("rb") as f:
        if sample_compresses(f.read(SAMPLE_BYTES)):
            return None
    if not store.verify(digest):
        raise CorruptBlob(digest, path)
    return path, size


def _chunk_frame(index: int, data: bytes) -> bytes:
    return chunk_reply_frame(index, *pack_chunk(data))


def _refusal(index: int, code: str) -> bytes:
    return encode_frame({"i": index, "e": code}, MAX_CHUNK_FRAME)
