"""The receiver's side: fetch a dataset's missing chunks from several holders at once.

One stream per source, each with up to ``window`` requests in flight (pipelined); sources pull
chunks from a shared :class:`~consensus.transfer.schedule.Schedule`, so a faster one takes more.
Every chunk is decompressed into at most its promised size and checked against its hash
before it enters the store; a source that sends a bad chunk is never asked again and the chunk
goes to another. Progress is journalled in batches (:mod:`storage.transfer_journal`); after a
crash only chunks that are neither journalled nor in the store move again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.network.stream.exceptions import StreamError

from consensus.errors import Invalid
from consensus.transfer.manifest import DEFAULT_LIMITS, Manifest, ManifestLimits, decode_manifest
from consensus.transfer.schedule import MAX_FAILURES, NoSourceLeft, Schedule, SourceStats
from node.transfer.channel import (
    KEY_BYTES,
    TOKEN_BYTES,
    ChunkChannel,
    SealedChannel,
    StreamChannel,
    ticket_frame,
)
from node.transfer.wire import (
    BULK_PROTOCOL,
    CHUNKS_PROTOCOL,
    MANIFEST_PROTOCOL,
    MAX_CHUNK_FRAME,
    MAX_MANIFEST_FRAME,
    unpack_chunk,
)
from p2p import reqresp
from p2p.framing import RequestError, decode_body, encode_frame, frame_limits
from p2p.host import DialError, Host
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 8
CHUNK_TIMEOUT_S = 30.0
CHECKERS = 4  # chunks verified and stored at once, per source
FLUSH_EVERY = 16  # chunks per journal transaction, or
FLUSH_AFTER_S = 0.5  # whichever comes first


async def open_bulk(host: Host, peer: str, dataset_id: bytes) -> ChunkChannel:
    """A sealed bulk channel to ``peer``, from a ticket asked for over libp2p.

    Raises:
        RequestError: no ticket (refused, or the holder has no bulk channel).
        DialError: no libp2p stream to ask on.
        OSError: the TCP connection failed.
    """
    stream = await host.new_stream(peer, BULK_PROTOCOL)
    channel = StreamChannel(stream)
    try:
        with trio.fail_after(CHUNK_TIMEOUT_S):
            await channel.send(ticket_frame({"d": dataset_id}))
            reply = decode_body(await channel.receive(4096), frame_limits(4096))
        remote = stream.get_remote_address()
    except trio.TooSlowError:
        raise RequestError("no bulk ticket in time") from None
    finally:
        await channel.aclose()
    ticket = reply.get("ok") if isinstance(reply, dict) else None
    if not isinstance(ticket, dict) or remote is None:
        raise RequestError(f"no bulk ticket: {reply!r:.100}")
    port, token, key = ticket.get("port"), ticket.get("token"), ticket.get("key")
    if not (isinstance(port, int) and isinstance(token, bytes) and isinstance(key, bytes)):
        raise RequestError("malformed bulk ticket")
    if len(token) != TOKEN_BYTES or len(key) != KEY_BYTES:
        raise RequestError("malformed bulk ticket")
    sock = await trio.open_tcp_stream(remote[0], port)
    await sock.send_all(token)
    return SealedChannel(sock, key, client=True)


@dataclass
class Progress:
    """Handed to ``on_chunk`` after each verified chunk (for progress bars)."""

    bytes_total: int
    bytes_have: int
    bytes_at_start: int  # held before this run (earlier runs, other datasets)
    started_at: float  # trio.current_time() when chunks began to move
    schedule: Schedule


class FetchFailed(Exception):
    """The dataset could not be fetched whole (the journal keeps what arrived)."""


@dataclass(frozen=True)
class FetchResult:
    dataset_id: bytes
    manifest: Manifest
    chunks_moved: int
    bytes_moved: int
    sources: dict[str, SourceStats]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def fetch_manifest(
    host: Host, store: BlobStore, dataset_id: bytes, sources: Sequence[str], limits: ManifestLimits
) -> Manifest:
    """The dataset's manifest, from the store or the first source that has it intact.

    Raises:
        FetchFailed: no source gave a manifest that hashes to the id and passes validation.
    """
    if store.has(dataset_id.hex()):
        data = await trio.to_thread.run_sync(store.get, dataset_id.hex())
        return decode_manifest(data, dataset_id, limits)
    errors = []
    for peer in sources:
        try:
            reply = await reqresp.request(
                host, peer, MANIFEST_PROTOCOL, {"d": dataset_id}, max_bytes=MAX_MANIFEST_FRAME
            )
            raw = reply.get("m") if isinstance(reply, dict) else None
            encoded = raw if isinstance(raw, bytes) else b""
            manifest = decode_manifest(encoded, dataset_id, limits)
        except (RequestError, Invalid) as exc:
            errors.append(f"{peer[-8:]}: {exc}")
            continue
        await trio.to_thread.run_sync(store.put, encoded)
        return manifest
    raise FetchFailed(f"manifest {dataset_id.hex()[:12]}: {'; '.join(errors) or 'no source'}")


async def fetch(
    host: Host,
    db: Database,
    store: BlobStore,
    dataset_id: bytes,
    sources: Sequence[str],
    *,
    window: int = DEFAULT_WINDOW,
    bulk: bool = False,
    limits: ManifestLimits = DEFAULT_LIMITS,
    on_chunk: Callable[[Progress], None] | None = None,
) -> FetchResult:
    """Make every chunk of ``dataset_id`` present and verified in ``store``.

    With ``bulk``, chunks move over a sealed TCP channel beside libp2p where a holder offers
    one (:mod:`node.transfer.channel`), else over the libp2p stream.

    Raises:
        FetchFailed: the manifest could not be had, or some chunk from no source.
        Invalid: the manifest held in the store is refused (see ``decode_manifest``).
    """
    sources = list(dict.fromkeys(sources))  # each holder once
    manifest = await fetch_manifest(host, store, dataset_id, sources, limits)
    await db.transaction(
        lambda c: journal.open_transfer(c, dataset_id, manifest, journal.FETCHED, _now_ms())
    )
    await db.transaction(lambda c: journal.reconcile(c, dataset_id, manifest, store.has))
    todo = await db.transaction(lambda c: journal.missing(c, dataset_id))
    sched = Schedule.of(todo, sources)
    missing_bytes = sum(manifest.chunks[i].size for i in todo)
    run = _Run(host, db, store, dataset_id, manifest, sched=sched, window=window, on_chunk=on_chunk)
    run.bulk = bulk
    held = manifest.total_bytes - missing_bytes
    run.progress = Progress(manifest.total_bytes, held, held, trio.current_time(), sched)
    try:
        async with trio.open_nursery() as nursery:
            for peer in sources if todo else ():  # nothing missing: no channel to open
                nursery.start_soon(run.source, peer)
    except* NoSourceLeft as group:
        run.error = str(group.exceptions[0])
    finally:
        with trio.CancelScope(shield=True):
            await run.flush()
            await db.transaction(lambda c: journal.record_sources(c, dataset_id, run.sched.sources))
    if not run.sched.finished:
        error = run.error or "every source failed or went away"
        await db.transaction(
            lambda c: journal.finish(c, dataset_id, journal.FAILED, error, _now_ms())
        )
        raise FetchFailed(f"{dataset_id.hex()[:12]}: {run.sched.pending()} chunks left: {error}")
    await db.transaction(lambda c: journal.finish(c, dataset_id, journal.COMPLETE, None, _now_ms()))
    return FetchResult(dataset_id, manifest, run.moved, run.moved_bytes, run.sched.sources)


class Refused(Invalid):
    """The source said it does not have the chunk (for us): no lie, so not corrupt."""

    peer_fault = False


def _payload_of(reply: Any, index: int) -> tuple[bool, bytes]:
    if not isinstance(reply, dict) or reply.get("i") != index:
        raise Invalid("chunk reply", "not the chunk asked for")
    if "e" in reply:
        raise Refused("chunk reply", f"refused: {reply['e']!r:.40}")
    payload, compressed = reply.get("b"), reply.get("z")
    if not isinstance(payload, bytes) or not isinstance(compressed, bool):
        raise Invalid("chunk reply", "expected {i, z: bool, b: bytes}")
    return compressed, payload


class _Run:
    """One fetch in progress: the schedule, the streams, the journal batch."""

    def __init__(
        self,
        host: Host,
        db: Database,
        store: BlobStore,
        dataset_id: bytes,
        manifest: Manifest,
        *,
        sched: Schedule,
        window: int,
        on_chunk: Callable[[Progress], None] | None,
    ) -> None:
        self.host, self.db, self.store = host, db, store
        self.dataset_id, self.manifest, self.sched = dataset_id, manifest, sched
        self.window, self.on_chunk = window, on_chunk
        self.changed = trio.Event()
        self.batch: list[int] = []
        self.batch_bytes = 0
        self.flushed_at = trio.current_time()
        self.moved = self.moved_bytes = 0
        self.error: str | None = None
        self.limits = frame_limits(MAX_CHUNK_FRAME)
        self.bulk = False
        self.progress = Progress(0, 0, 0, 0.0, sched)

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _open(self, peer: str) -> ChunkChannel:
        if self.bulk:
            try:
                return await open_bulk(self.host, peer, self.dataset_id)
            except (RequestError, DialError, OSError) as exc:
                log.info("no bulk channel from %s (%r): using the libp2p stream", peer[-8:], exc)
        return StreamChannel(await self.host.new_stream(peer, CHUNKS_PROTOCOL))

    async def source(self, peer: str) -> None:
        try:
            channel = await self._open(peer)
        except DialError as exc:
            log.info("source %s unreachable: %s", peer[-8:], exc)
            self.sched.sources[peer].failures = MAX_FAILURES
            self._signal()
            return
        try:
            send, receive = trio.open_memory_channel[tuple[int, float]](self.window)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._requests, channel, peer, send)
                await self._responses(channel, peer, receive)
                nursery.cancel_scope.cancel()
        except* (RequestError, StreamError, EOFError, trio.TooSlowError) as group:
            log.info("source %s dropped: %r", peer[-8:], group.exceptions[0])
            self.sched.sources[peer].failures = MAX_FAILURES
        finally:
            self.sched.release(peer)
            self._signal()
            await channel.aclose()

    async def _requests(
        self, channel: ChunkChannel, peer: str, send: trio.MemorySendChannel[tuple[int, float]]
    ) -> None:
        async with send:
            while True:
                changed = self.changed
                index = self.sched.assign(peer)
                if index is None:
                    if self.sched.finished or self.sched.sources[peer].banned:
                        return
                    await changed.wait()
                    continue
                await send.send((index, trio.current_time()))
                await channel.send(encode_frame({"d": self.dataset_id, "i": index}, 4096))

    async def _responses(
        self,
        channel: ChunkChannel,
        peer: str,
        receive: trio.MemoryReceiveChannel[tuple[int, float]],
    ) -> None:
        # Verifying and storing (hash, write, fsync) overlap with reading the next replies.
        checkers = trio.Semaphore(CHECKERS)
        async with trio.open_nursery() as nursery:
            async for index, sent_at in receive:
                with trio.fail_after(CHUNK_TIMEOUT_S):
                    reply = decode_body(await channel.receive(MAX_CHUNK_FRAME), self.limits)
                if self.sched.sources[peer].banned:
                    break
                await checkers.acquire()
                nursery.start_soon(self._check, checkers, peer, index, reply, sent_at)

    async def _check(
        self, checkers: trio.Semaphore, peer: str, index: int, reply: Any, sent_at: float
    ) -> None:
        try:
            await self._accept(peer, index, reply, sent_at)
        finally:
            checkers.release()

    async def _accept(self, peer: str, index: int, reply: Any, sent_at: float) -> bool:
        chunk = self.manifest.chunks[index]
        elapsed_ms = int((trio.current_time() - sent_at) * 1000)
        try:
            compressed, payload = _payload_of(reply, index)
            await trio.to_thread.run_sync(self._verify_and_store, compressed, payload, chunk)
        except Invalid as exc:
            log.info("source %s chunk %d: %s", peer[-8:], index, exc)
            self.sched.failed(index, peer, corrupt=exc.peer_fault)
            self._signal()
            return False
        self.sched.done(index, peer, len(payload), elapsed_ms)
        self.moved += 1
        self.moved_bytes += len(payload)
        self.batch.append(index)
        self.batch_bytes += len(payload)
        self.progress.bytes_have += chunk.size
        if self.on_chunk is not None:
            self.on_chunk(self.progress)
        due = trio.current_time() - self.flushed_at >= FLUSH_AFTER_S
        if len(self.batch) >= FLUSH_EVERY or due or self.sched.finished:
            await self.flush()
        if self.sched.finished:
            self._signal()
        return True

    def _verify_and_store(self, compressed: bool, payload: bytes, chunk: Any) -> None:
        data = unpack_chunk(compressed, payload, chunk.size, chunk.hash)
        self.store.put(data, sync=False)  # made durable by flush(), before the journal says so

    async def flush(self) -> None:
        batch, moved = self.batch, self.batch_bytes
        self.batch, self.batch_bytes = [], 0
        self.flushed_at = trio.current_time()
        if batch:
            await trio.to_thread.run_sync(self.store.sync)
            await self.db.transaction(
                lambda c: journal.mark_have(c, self.dataset_id, batch, moved, _now_ms())
            )
