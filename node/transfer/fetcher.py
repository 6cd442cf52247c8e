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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from consensus.errors import Invalid
from consensus.peer_id import short
from consensus.transfer.links import MAX_SOURCES, Probe, rank
from consensus.transfer.manifest import DEFAULT_LIMITS, Manifest, ManifestLimits, decode_manifest
from consensus.transfer.schedule import NoSourceLeft, Schedule, SourceStats
from node.transfer.probe import probe_all
from node.transfer.run import CHECKERS, DEFAULT_WINDOW, Progress, Run, now_ms, open_bulk
from node.transfer.wire import MANIFEST_PROTOCOL, MAX_MANIFEST_FRAME
from p2p import reqresp
from p2p.framing import RequestError
from p2p.host import Host
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.db import Database

__all__ = ["CHECKERS", "DEFAULT_WINDOW", "FetchFailed", "Progress", "fetch", "open_bulk"]

log = logging.getLogger(__name__)


class FetchFailed(Exception):
    """The dataset could not be fetched whole (the journal keeps what arrived)."""


@dataclass(frozen=True)
class FetchResult:
    dataset_id: bytes
    manifest: Manifest
    chunks_moved: int
    bytes_moved: int
    sources: dict[str, SourceStats]


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
            errors.append(f"{short(peer)}: {exc}")
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
    window: int | None = None,
    bulk: bool = False,
    limits: ManifestLimits = DEFAULT_LIMITS,
    on_chunk: Callable[[Progress], None] | None = None,
    max_sources: int = MAX_SOURCES,
) -> FetchResult:
    """Make every chunk of ``dataset_id`` present and verified in ``store``.

    Every candidate in ``sources`` is probed first (:mod:`node.transfer.probe`); the fastest
    ``max_sources`` that serve the dataset to us are used, the others wait as standby for one
    that drops, is banned or slows down. ``window`` fixes the requests in flight per source;
    None adapts it to each link's measured round trip and rate (:mod:`consensus.transfer.links`).
    With ``bulk``, chunks move over a sealed TCP channel beside libp2p where a holder offers
    one (:mod:`node.transfer.channel`), else over the libp2p stream.

    Raises:
        FetchFailed: no source serves it, the manifest could not be had, or some chunk from
            no source.
        Invalid: the manifest held in the store is refused (see ``decode_manifest``).
    """
    probes = await probe_all(host, list(dict.fromkeys(sources)), dataset_id)
    active, standby = rank(probes, max_sources)
    if not active and not store.has(dataset_id.hex()):
        seen = ", ".join(f"{short(p.peer)}: {_verdict(p)}" for p in probes) or "no candidates"
        raise FetchFailed(f"{dataset_id.hex()[:12]}: no source serves it to us ({seen})")
    manifest = await fetch_manifest(host, store, dataset_id, active + standby, limits)
    await db.transaction(
        lambda c: journal.open_transfer(c, dataset_id, manifest, journal.FETCHED, now_ms())
    )
    await db.transaction(lambda c: journal.reconcile(c, dataset_id, manifest, store.has))
    todo = await db.transaction(lambda c: journal.missing(c, dataset_id))
    sched = Schedule.of(todo, active + standby)
    run = Run(
        host, db, store, dataset_id, manifest,
        sched=sched, probes=probes, window=window, on_chunk=on_chunk,
    )  # fmt: skip
    run.bulk, run.standby = bulk, list(standby)
    missing_bytes = sum(manifest.chunks[i].size for i in todo)
    held = manifest.total_bytes - missing_bytes
    run.progress = Progress(manifest.total_bytes, held, held, trio.current_time(), sched)
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(run.reprobe)
            outer.start_soon(run.journal_writer)
            async with trio.open_nursery() as nursery:
                run.nursery = nursery
                for peer in active if todo else ():  # nothing missing: no channel to open
                    run.start(peer)
            outer.cancel_scope.cancel()
    except* NoSourceLeft as group:
        run.error = str(group.exceptions[0])
    finally:
        with trio.CancelScope(shield=True):
            await run.flush()
            await db.transaction(lambda c: journal.record_sources(c, dataset_id, run.sched.sources))
    if not run.sched.finished:
        error = run.error or "every source failed or went away"
        await db.transaction(
            lambda c: journal.finish(c, dataset_id, journal.FAILED, error, now_ms())
        )
        raise FetchFailed(f"{dataset_id.hex()[:12]}: {run.sched.pending()} chunks left: {error}")
    await db.transaction(lambda c: journal.finish(c, dataset_id, journal.COMPLETE, None, now_ms()))
    return FetchResult(dataset_id, manifest, run.moved, run.moved_bytes, run.sched.sources)


def _verdict(p: Probe) -> str:
    return "no answer" if p.rtt_s is None else "does not serve it to us"
