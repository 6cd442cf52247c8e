"""One fetch in progress (see :mod:`node.transfer.fetcher`): a task per source, each keeping
its link's window of requests in flight, verifying and storing replies, and the journal batch.

What each link measured (probe round trip, delivered rate) sets its window and chunk timeout
(:mod:`consensus.transfer.links`); a source that falls far behind the best is left for a
standby one, and comes back only if the others cannot serve what is left.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.network.stream.exceptions import StreamError

from consensus.errors import Invalid
from consensus.peer_id import short
from consensus.transfer import links
from consensus.transfer.links import Probe
from consensus.transfer.manifest import Manifest
from consensus.transfer.schedule import MAX_FAILURES, Schedule
from node.transfer.channel import (
    KEY_BYTES,
    TOKEN_BYTES,
    Body,
    ChunkChannel,
    PlainChannel,
    SealedChannel,
    StreamChannel,
    ticket_frame,
)
from node.transfer.probe import probe_all
from node.transfer.sealed import is_sealed
from node.transfer.wire import (
    BULK_PROTOCOL,
    CHUNKS_PROTOCOL,
    MAX_CHUNK_FRAME,
    split_chunk_reply,
    unpack_chunk,
)
from p2p.framing import RequestError, StreamFailed, decode_body, encode_frame, frame_limits
from p2p.host import DialError, Host
from storage import transfer_access as access
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 8
CHUNK_TIMEOUT_S = links.BASE_TIMEOUT_S
BULK_CONNECT_TIMEOUT_S = 3.0  # a connect on a LAN or the internet takes well under that
CHECKERS = 4  # chunks verified and stored at once, per source
# Verified chunks are made durable (one filesystem sync) and journalled in batches, by a task
# of their own: a sync can take a tenth of a second on a busy disk, and chunks keep arriving
# meanwhile. A kill -9 before the journal says so loses nothing (the next fetch finds the
# chunks in the store); a power cut loses at most a batch.
FLUSH_BYTES = 64 << 20  # per batch, or
FLUSH_AFTER_S = 1.0  # after this long, whichever comes first
PROBE_EVERY_S = 2.0  # re-probe the routes while a transfer runs


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def open_bulk(
    host: Host,
    peer: str,
    request: dict[str, Any],
    protocol: str = BULK_PROTOCOL,
    *,
    ciphertext: bool = False,
) -> ChunkChannel:
    """A bulk channel to ``peer``, from a ticket asked for over libp2p.

    ``request`` goes to ``protocol``, a request/response protocol whose handler answers with
    :meth:`~node.transfer.server.TransferServer.issue_ticket` (by default the one for a
    dataset's chunks: ``{"d": dataset id}``). A ticket without a key is for a plain channel,
    taken only for ``ciphertext`` (what will move is sealed end to end already): a holder
    that offers one for anything else would send our data in the clear, and is refused.

    Raises:
        RequestError: no ticket (refused, or the holder has no bulk channel), or a plain one
            for data that is not ``ciphertext``.
        DialError: no libp2p stream to ask on.
        OSError: the TCP connection failed.
    """
    stream = await host.new_stream(peer, protocol)
    channel = StreamChannel(stream)
    try:
        with trio.fail_after(CHUNK_TIMEOUT_S):
            await channel.send(ticket_frame(request))
            reply = decode_body(bytes(await channel.receive(4096)), frame_limits(4096))
        remote = stream.get_remote_address()
    except trio.TooSlowError:
        raise RequestError("no bulk ticket in time") from None
    finally:
        await channel.aclose()
    ticket = reply.get("ok") if isinstance(reply, dict) else None
    if not isinstance(ticket, dict) or remote is None:
        raise RequestError(f"no bulk ticket: {reply!r:.100}")
    port, token, key = ticket.get("port"), ticket.get("token"), ticket.get("key")
    if not (isinstance(port, int) and isinstance(token, bytes) and len(token) == TOKEN_BYTES):
        raise RequestError("malformed bulk ticket")
    if key is None and not ciphertext:
        raise RequestError("a plain bulk ticket, for data that is not sealed end to end")
    if key is not None and not (isinstance(key, bytes) and len(key) == KEY_BYTES):
        raise RequestError("malformed bulk ticket")
    return await _connect_bulk(remote[0], port, token, key)


async def _connect_bulk(ip: str, port: int, token: bytes, key: bytes | None) -> ChunkChannel:
    """Connects to a holder's bulk port and presents the ticket's token.

    A port behind NAT is usually not forwarded, and a firewall that drops the connection
    leaves it hanging: after :data:`BULK_CONNECT_TIMEOUT_S` the caller takes the libp2p path.

    Raises:
        StreamFailed: no connection in time, or it broke at once.
        OSError: the connection was refused.
    """
    with trio.move_on_after(BULK_CONNECT_TIMEOUT_S):
        sock = await trio.open_tcp_stream(ip, port)
        try:
            await sock.send_all(token)
        except BaseException as exc:  # broken, or cancelled: the socket goes either way
            await trio.aclose_forcefully(sock)
            if isinstance(exc, trio.BrokenResourceError):
                raise StreamFailed(f"bulk connection broke: {exc!r}") from exc
            raise
        return PlainChannel(sock) if key is None else SealedChannel(sock, key, client=True)
    raise StreamFailed(f"bulk port {port} did not answer in {BULK_CONNECT_TIMEOUT_S:.0f} s")


@dataclass
class Progress:
    """Handed to ``on_chunk`` after each verified chunk (for progress bars)."""

    bytes_total: int
    bytes_have: int
    bytes_at_start: int  # held before this run (earlier runs, other datasets)
    started_at: float  # trio.current_time() when chunks began to move
    schedule: Schedule


@dataclass
class Link:
    """What this fetch knows of one source's route."""

    route: str
    rtt_s: float | None
    state: str  # used, standby, slow, lacks, unreachable, dropped, banned
    window: int = DEFAULT_WINDOW
    started_at: float = 0.0
    bytes: int = 0  # since it was last started
    samples: int = 0
    inflight: int = 0
    room: trio.Event = field(default_factory=trio.Event)

    def rate_bps(self, now: float) -> int:
        return int(self.bytes / max(now - self.started_at, 1e-3)) if self.samples else 0


class Refused(Invalid):
    """The source said it does not have the chunk (for us): no lie, so not corrupt."""

    peer_fault = False


def _payload_of(reply: Any, index: int) -> tuple[bool, Body]:
    if not isinstance(reply, dict) or reply.get("i") != index:
        raise Invalid("chunk reply", "not the chunk asked for")
    if "e" in reply:
        raise Refused("chunk reply", f"refused: {reply['e']!r:.40}")
    payload, compressed = reply.get("b"), reply.get("z")
    if not isinstance(payload, bytes | memoryview) or not isinstance(compressed, bool):
        raise Invalid("chunk reply", "expected {i, z: bool, b: bytes}")
    return compressed, payload


class Run:
    """One fetch in progress: the schedule, the links, the streams, the journal batch."""

    def __init__(
        self,
        host: Host,
        db: Database,
        store: BlobStore,
        dataset_id: bytes,
        manifest: Manifest,
        *,
        sched: Schedule,
        probes: list[Probe],
        window: int | None,
        on_chunk: Callable[[Progress], None] | None,
    ) -> None:
        self.host, self.db, self.store = host, db, store
        self.dataset_id, self.manifest, self.sched = dataset_id, manifest, sched
        self.fixed_window, self.on_chunk = window, on_chunk
        self.links = {p.peer: Link(p.route, p.rtt_s, _state_of(p)) for p in probes}
        self.chunk_bytes = max((c.size for c in manifest.chunks), default=1)
        self.changed = trio.Event()
        self.batch: list[int] = []
        self.batch_bytes = 0
        self.batch_full = trio.Event()
        self.moved = self.moved_bytes = 0
        self.journalled_bytes = 0  # of moved_bytes
        self.error: str | None = None
        self.limits = frame_limits(MAX_CHUNK_FRAME)
        self.bulk = False
        self.progress = Progress(0, 0, 0, 0.0, sched)
        self.standby: list[str] = []
        self.parked: list[str] = []  # left for being slow
        self.nursery: trio.Nursery | None = None

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def start(self, peer: str) -> None:
        link = self.links[peer]
        link.state, link.started_at, link.bytes, link.samples = "used", trio.current_time(), 0, 0
        link.window = self.fixed_window or DEFAULT_WINDOW
        self.sched.sources[peer].slow = False
        assert self.nursery is not None
        self.nursery.start_soon(self.source, peer)

    def _next_source(self, *, force: bool) -> None:
        """Start a standby source; a parked (slow) one only if ``force`` or none is in use."""
        if self.sched.finished:
            return
        if self.standby:
            self.start(self.standby.pop(0))
        elif self.parked and (force or not any(x.state == "used" for x in self.links.values())):
            self.start(self.parked.pop(0))

    async def reprobe(self) -> None:
        """Re-probe the sources in use or waiting every ``PROBE_EVERY_S``, until cancelled."""
        while True:
            await trio.sleep(PROBE_EVERY_S)
            waiting = [p for p, x in self.links.items() if x.state in ("used", "standby", "slow")]
            for found in await probe_all(self.host, waiting, self.dataset_id):
                self.links[found.peer].rtt_s = found.rtt_s

    async def _open(self, peer: str) -> ChunkChannel:
        if self.bulk:
            try:
                request = {"d": self.dataset_id}
                sealed = is_sealed(self.manifest)
                return await open_bulk(self.host, peer, request, ciphertext=sealed)
            except (RequestError, DialError, OSError) as exc:
                log.info("no bulk channel from %s (%r): using the libp2p stream", short(peer), exc)
        return StreamChannel(await self.host.new_stream(peer, CHUNKS_PROTOCOL))

    async def source(self, peer: str) -> None:
        try:
            channel = await self._open(peer)
        except DialError as exc:
            log.info("source %s unreachable: %s", short(peer), exc)
            self.sched.sources[peer].failures = MAX_FAILURES
            self._end(peer)
            return
        try:
            send, receive = trio.open_memory_channel[tuple[int, float]](math.inf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._requests, channel, peer, send)
                await self._responses(channel, peer, receive)
                nursery.cancel_scope.cancel()
        except* (RequestError, StreamError, EOFError, trio.TooSlowError) as group:
            log.info("source %s dropped: %r", short(peer), group.exceptions[0])
            self.sched.sources[peer].failures = MAX_FAILURES
        finally:
            self._end(peer)
            await channel.aclose()

    def _end(self, peer: str) -> None:
        self.sched.release(peer)
        stats, link = self.sched.sources[peer], self.links[peer]
        link.inflight = 0
        if stats.slow:
            link.state = "slow"
            self.parked.append(peer)
        elif stats.banned:
            link.state = "banned" if stats.corrupt else "dropped"
        self._next_source(force=False)
        self._signal()

    async def _requests(
        self, channel: ChunkChannel, peer: str, send: trio.MemorySendChannel[tuple[int, float]]
    ) -> None:
        link, stats = self.links[peer], self.sched.sources[peer]
        async with send:
            while True:
                while link.inflight >= link.window and not (stats.banned or stats.slow):
                    link.room = trio.Event()
                    await link.room.wait()
                changed = self.changed
                index = self.sched.assign(peer)
                if index is None:
                    if self.sched.finished or stats.banned or stats.slow:
                        return
                    if self.sched.queued():  # chunks this source cannot serve: ask another
                        self._next_source(force=True)
                    await changed.wait()
                    continue
                link.inflight += 1
                await send.send((index, trio.current_time()))
                await channel.send(encode_frame({"d": self.dataset_id, "i": index}, 4096))

    async def _responses(
        self,
        channel: ChunkChannel,
        peer: str,
        receive: trio.MemoryReceiveChannel[tuple[int, float]],
    ) -> None:
        # Verifying and storing (hash, write) overlap with reading the next replies.
        checkers = trio.Semaphore(CHECKERS)
        link, stats = self.links[peer], self.sched.sources[peer]
        async with trio.open_nursery() as nursery:
            async for index, sent_at in receive:
                timeout = links.chunk_timeout(link.rate_bps(trio.current_time()), self.chunk_bytes)
                with trio.fail_after(timeout):
                    body = await channel.receive(MAX_CHUNK_FRAME)
                reply = self._reply_of(channel, body)
                link.inflight = max(link.inflight - 1, 0)
                link.room.set()
                if stats.banned or stats.slow:
                    break
                await checkers.acquire()
                done = functools.partial(_done, checkers, channel, body, reply)
                nursery.start_soon(self._check, done, peer, index, reply, sent_at)

    def _reply_of(self, channel: ChunkChannel, body: Body) -> Any:
        """The reply in ``body``: a chunk's payload a view into it (``body`` is handed back
        once the chunk is stored), anything else decoded (``body`` handed back at once)."""
        reply = split_chunk_reply(body)
        if reply is None:
            try:
                reply = decode_body(bytes(body), self.limits)
            finally:
                channel.release(body)
        return reply

    async def _check(
        self, done: Callable[[], None], peer: str, index: int, reply: Any, sent_at: float
    ) -> None:
        try:
            await self._accept(peer, index, reply, sent_at)
        finally:
            done()

    async def _accept(self, peer: str, index: int, reply: Any, sent_at: float) -> bool:
        chunk = self.manifest.chunks[index]
        elapsed_ms = int((trio.current_time() - sent_at) * 1000)
        try:
            compressed, payload = _payload_of(reply, index)
            await trio.to_thread.run_sync(self._verify_and_store, compressed, payload, chunk)
        except Invalid as exc:
            log.info("source %s chunk %d: %s", short(peer), index, exc)
            self.sched.failed(index, peer, corrupt=exc.peer_fault)
            self._signal()
            return False
        self.sched.done(index, peer, len(payload), elapsed_ms)
        self._measured(peer, len(payload))
        self.moved += 1
        self.moved_bytes += len(payload)
        self.batch.append(index)
        self.batch_bytes += chunk.size
        self.progress.bytes_have += chunk.size
        if self.on_chunk is not None:
            self.on_chunk(self.progress)
        if self.batch_bytes >= FLUSH_BYTES:
            self.batch_full.set()
        if self.sched.finished:
            self._signal()
        return True

    def _measured(self, peer: str, nbytes: int) -> None:
        """A chunk arrived from ``peer``: update its rate and window; leave a slow source."""
        link, now = self.links[peer], trio.current_time()
        link.bytes += nbytes
        link.samples += 1
        if self.fixed_window is None:
            link.window = links.window(link.rtt_s, link.rate_bps(now), self.chunk_bytes)
        used = {p: x for p, x in self.links.items() if x.state == "used"}
        best = max((x.rate_bps(now) for x in used.values() if x.samples), default=0)
        for other, x in used.items():
            if links.is_slow(x.rate_bps(now), x.samples, best) and not self.sched.finished:
                log.info("source %s is slow: leaving it for another", short(other))
                self.sched.sources[other].slow = True
                x.state = "slow"
                x.room.set()
                self._signal()

    def _verify_and_store(self, compressed: bool, payload: Body, chunk: Any) -> None:
        data = unpack_chunk(compressed, payload, chunk.size, chunk.hash)
        # Made durable by flush(), before the journal says so.
        self.store.put_hashed(data, chunk.hash.hex(), sync=False)

    def probe_rows(self) -> list[access.ProbeRow]:
        now, at = trio.current_time(), now_ms()
        return [
            access.ProbeRow(
                peer, x.route, x.state, None if x.rtt_s is None else int(x.rtt_s * 1e6),
                x.rate_bps(now), x.window, at,
            )
            for peer, x in self.links.items()
        ]  # fmt: skip

    async def journal_writer(self) -> None:
        """Flush a batch whenever one fills or :data:`FLUSH_AFTER_S` passes, until cancelled
        (a flush under way finishes first: its chunks are already out of the batch)."""
        while True:
            with trio.move_on_after(FLUSH_AFTER_S):
                await self.batch_full.wait()
            self.batch_full = trio.Event()
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Sync the store and journal the chunks verified since the last flush."""
        batch, moved = self.batch, self.moved_bytes - self.journalled_bytes
        self.batch, self.batch_bytes, self.journalled_bytes = [], 0, self.moved_bytes
        rows = self.probe_rows()
        if batch:
            await trio.to_thread.run_sync(self.store.sync)
        await self.db.transaction(lambda c: self._record(c, batch, moved, rows))

    def _record(
        self, conn: sqlite3.Connection, batch: list[int], moved: int, rows: list[access.ProbeRow]
    ) -> None:
        journal.mark_have(conn, self.dataset_id, batch, moved, now_ms())
        access.record_probes(conn, self.dataset_id, rows)


def _done(checkers: trio.Semaphore, channel: ChunkChannel, body: Body, reply: Any) -> None:
    """A reply is verified and stored, or refused: make room for the next one, and hand its
    body back to the channel if the payload was a view into it."""
    checkers.release()
    if isinstance(reply, dict) and isinstance(reply.get("b"), memoryview):
        channel.release(body)


def _state_of(p: Probe) -> str:
    if p.rtt_s is None:
        return "unreachable"
    return "standby" if p.has else "lacks"
