"""The daemon's datasets: serve those held here with the node's own key, fetch others.

One service for every node, whatever its roles: a :class:`~node.transfer.server.TransferServer`
on the node's libp2p host (with the bulk channel) offers every complete dataset to the peers
granted it (``transfer_grants``), and the node provides each such dataset's id in the DHT
(:func:`dataset_key`), so ``data get`` without ``--from`` finds holders there and among the
peers it is connected to (a probe says which of them serve it to us). A fetch runs as a task
of this service: the CLI starts it over the local API and follows it in the journal.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus.errors import Invalid
from consensus.transfer.eviction import Cached, idle, to_evict
from consensus.transfer.manifest import DEFAULT_LIMITS, Manifest, decode_manifest
from node.discovery import LOOKUP_TIMEOUT_S, REPROVIDE_S, locate
from node.market.blobshare import FetchFailed as TaskFetchFailed
from node.market.datasets import NoRoom, free_bytes, room_needed, task_data_keep_ms
from node.market.sealing import SealError
from node.transfer import local
from node.transfer.fetcher import FetchFailed, fetch, fetch_manifest
from node.transfer.run import now_ms
from node.transfer.sealed import is_sealed, open_tree
from node.transfer.server import TransferServer
from p2p.host import DialError
from storage import dataset_cache as cache
from storage import transfer_access as access
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.errors import CorruptBlob
from storage.transfer_files import UnsafeTarget, materialize

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext
    from node.network import Network

log = logging.getLogger(__name__)

RETRY_S = 5.0  # a dataset id no DHT peer took yet is provided again this soon
MAX_ASKED = 32  # connected peers probed for a dataset nobody named
EXPIRY_CHECK_S = 600.0  # the expiry sweep runs at least this often (sooner for short expiries)
FETCH_ERRORS = (FetchFailed, DialError, Invalid, UnsafeTarget, CorruptBlob, ValueError)


def dataset_key(dataset_id: bytes) -> str:
    """The DHT name a holder of ``dataset_id`` provides."""
    return f"/idlegrid/1/data/{dataset_id.hex()}"


@dataclass
class Job:
    """One ``data get`` running in the daemon."""

    state: str = "fetching"  # fetching, complete, failed
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataService:
    net: Network
    store: BlobStore
    server: TransferServer
    nursery: trio.Nursery
    jobs: dict[bytes, Job] = field(default_factory=dict)
    _to_provide: trio.MemorySendChannel[bytes] | None = None
    _placing: dict[bytes, trio.Lock] = field(default_factory=dict)  # one fetch per dataset
    busy: Callable[[], frozenset[bytes]] = frozenset  # datasets running tasks read (a worker's)
    reserve_bytes: int = 0  # disk no dataset may take (worker.disk_reserve_mb)
    keep_ms: int = 0  # a dataset a task used stays this long (task_data_keep_ms)

    async def offer(self, dataset_id: bytes, manifest: Manifest | None = None) -> int:
        """Serve ``dataset_id`` (complete here) to the peers granted it; returns the grants.

        Raises:
            KeyError: the dataset is not held whole here.
        """
        db = self.net.ctx.db
        manifest = manifest or await self._complete(dataset_id)
        if manifest is None:
            raise KeyError(dataset_id.hex())
        self.server.offer(dataset_id, manifest)
        mine = await db.transaction(lambda c: access.grants(c, dataset_id))
        for peer in mine:
            self.server.grant(peer, dataset_id)
        if self._to_provide is not None:
            self._to_provide.send_nowait(dataset_id)
        return len(mine)

    # --- what the market uses (node.market.datasets.Datasets) -----------------------------

    async def unusable(self, dataset_id: bytes) -> str:
        """Why a job cannot name ``dataset_id`` from this node, or ""."""
        manifest = await self._complete(dataset_id)
        if manifest is None:
            return f"dataset {dataset_id.hex()[:16]} is not held whole here: `idlegrid data add`"
        if is_sealed(manifest):
            return "a sealed dataset opens for one peer only: add it without --for"
        return ""

    async def size(self, dataset_id: bytes) -> int:
        """The bytes of ``dataset_id``'s files if it is held whole here, else 0.

        Its files, not its chunks: a task's folder holds each file in full, and the chunk
        store never holds more than that.
        """
        manifest = await self._complete(dataset_id)
        return 0 if manifest is None else sum(f.size for f in manifest.files)

    async def _complete(self, dataset_id: bytes) -> Manifest | None:
        """The manifest of ``dataset_id`` if the journal has it whole here, else None."""
        rows = await self.net.ctx.db.transaction(lambda c: journal.transfers(c, dataset_id))
        if not rows or rows[0].state != journal.COMPLETE:
            return None
        raw = await trio.to_thread.run_sync(self.store.get, dataset_id.hex())
        return decode_manifest(raw, dataset_id)

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from us (kept in sqlite, like ``data grant``)."""
        now = now_ms()
        await self.net.ctx.db.transaction(lambda c: access.grant(c, dataset_id, [peer], now))
        self.server.grant(peer, dataset_id)

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        """Fetches what is missing of ``dataset_id`` from ``holders`` and writes it to ``out``;
        afterwards this node serves it to whom it grants it (a sentry checking the task).

        Raises:
            node.market.blobshare.FetchFailed: not fetched whole, or sealed.
        """
        lock = self._placing.setdefault(dataset_id, trio.Lock())
        async with lock:  # two tasks on one dataset: the second finds it all here
            held = await self._complete(dataset_id) is not None
            try:
                manifest = await self._fetched(dataset_id, holders)
                await trio.to_thread.run_sync(materialize, manifest, self.store, out)
            except FETCH_ERRORS as exc:
                raise TaskFetchFailed(str(exc)) from exc
            now = now_ms()
            if held:  # the operator's own stays out of the cache
                await self.net.ctx.db.transaction(lambda c: cache.touch(c, [dataset_id], now))
            else:
                await self.net.ctx.db.transaction(lambda c: cache.use(c, dataset_id, now))
            await self.offer(dataset_id, manifest)

    async def _room_for(self, dataset_id: bytes, manifest: Manifest) -> None:
        """Makes room to place ``dataset_id`` (deleting idle cached datasets if need be).

        Raises:
            NoRoom: there is none beyond ``reserve_bytes``, even then.
        """
        need = await trio.to_thread.run_sync(room_needed, manifest, self.store.has)
        free = await trio.to_thread.run_sync(free_bytes, self.store.root) - self.reserve_bytes
        if need > free:
            own = frozenset({dataset_id})
            if await self.make_room(need - free, own, self.keep_ms) > 0:
                free = await trio.to_thread.run_sync(free_bytes, self.store.root)
                free -= self.reserve_bytes
        if need > free:
            raise NoRoom(
                f"no room for dataset {dataset_id.hex()[:16]}: needs {-(-need >> 20)} MB, "
                f"{max(0, free) >> 20} MB free beyond the {self.reserve_bytes >> 20} MB reserve"
            )

    async def used(self, ids: list[bytes]) -> None:
        """A task that read these datasets ended now: a sentry may still fetch them."""
        now = now_ms()
        await self.net.ctx.db.transaction(lambda c: cache.touch(c, ids, now))

    async def make_room(self, needed: int, busy: frozenset[bytes], keep_ms: int) -> int:
        """Deletes datasets fetched for tasks (:mod:`consensus.transfer.eviction`) to free
        ``needed`` bytes; returns the bytes freed (0: nothing could go)."""
        now, entries = now_ms(), await self._cached()
        chosen = to_evict(entries, needed=needed, busy=busy | self.busy(), now_ms=now,
                          keep_ms=keep_ms)  # fmt: skip
        return await self._evict(chosen, entries, now, "dataset evicted")

    async def expire_loop(self, after_ms: int) -> None:
        """Deletes datasets fetched for tasks once unused for ``after_ms``, until cancelled."""
        while True:
            await trio.sleep(min(max(after_ms / 4000, 1.0), EXPIRY_CHECK_S))
            now, entries = now_ms(), await self._cached()
            stale = idle(entries, busy=self.busy(), now_ms=now, keep_ms=after_ms)
            await self._evict([c.dataset_id for c in stale], entries, now, "dataset expired")

    async def _cached(self) -> list[Cached]:
        """The datasets fetched for tasks that no fetch is writing now."""
        db = self.net.ctx.db
        used, rows = await db.transaction(lambda c: (cache.cached(c), journal.transfers(c)))
        return [
            Cached(r.dataset_id, used[r.dataset_id], r.bytes_total)
            for r in rows
            if r.dataset_id in used and not self._fetching(r.dataset_id)
        ]

    async def _evict(self, ids: list[bytes], entries: list[Cached], now: int, what: str) -> int:
        used, freed = {c.dataset_id: c.used_ms for c in entries}, 0
        for dataset_id in ids:
            try:
                removed = await self.remove(dataset_id)
            except (KeyError, RuntimeError):  # removed or being fetched since we looked
                continue
            freed += removed.bytes_freed
            idle_s = (now - used[dataset_id]) // 1000
            log.info(what, extra={"dataset": dataset_id.hex()[:16], "idle_s": idle_s,
                                  "bytes_freed": removed.bytes_freed})  # fmt: skip
        return freed

    async def cache_size(self) -> tuple[int, int]:
        """How many datasets fetched for tasks are held here, and their bytes."""
        used, rows = await self.net.ctx.db.transaction(
            lambda c: (cache.cached(c), journal.transfers(c))
        )
        sizes = [r.bytes_total for r in rows if r.dataset_id in used]
        return len(sizes), sum(sizes)

    def _fetching(self, dataset_id: bytes) -> bool:
        """Whether a task is placing ``dataset_id`` or ``data get`` is fetching it."""
        job, lock = self.jobs.get(dataset_id), self._placing.get(dataset_id)
        return (job is not None and job.state == "fetching") or (lock is not None and lock.locked())

    async def _fetched(self, dataset_id: bytes, holders: list[str]) -> Manifest:
        connected = set(self.net.host.connected_peers())
        elsewhere = [h for h in holders if h not in connected]
        peers = [h for h in holders if h in connected]
        if elsewhere:
            peers += await self._candidates(dataset_id, elsewhere)
        net = self.net
        manifest = await fetch_manifest(net.host, self.store, dataset_id, peers, DEFAULT_LIMITS)
        await self._room_for(dataset_id, manifest)
        result = await fetch(net.host, net.ctx.db, self.store, dataset_id, peers, bulk=True)
        if is_sealed(result.manifest):
            raise FetchFailed("a sealed dataset: a job's datasets are added without --for")
        log.info("dataset placed", extra={"dataset": dataset_id.hex()[:16],
                                          "chunks_moved": result.chunks_moved,
                                          "bytes_moved": result.bytes_moved})  # fmt: skip
        return result.manifest

    async def remove(self, dataset_id: bytes) -> local.Removed:
        """Stops serving ``dataset_id`` and deletes it here (chunks other datasets use stay).

        Raises:
            KeyError: nothing is recorded of it here.
            RuntimeError: a fetch of it is running (a task placing it, or ``data get``).
        """
        if self._fetching(dataset_id):
            raise RuntimeError(f"dataset {dataset_id.hex()[:16]} is being fetched: try later")
        self.server.withdraw(dataset_id)
        removed = await trio.to_thread.run_sync(
            local.remove, self.net.ctx.home.db, self.store, dataset_id
        )
        log.info("dataset removed", extra={"dataset": dataset_id.hex()[:16], **vars(removed)})
        return removed

    def start_get(
        self, dataset_id: bytes, out: Path, sources: list[str], opts: dict[str, Any]
    ) -> Job:
        job = self.jobs[dataset_id] = Job()
        self.nursery.start_soon(self._get, job, dataset_id, out, sources, opts)
        return job

    async def _get(
        self, job: Job, dataset_id: bytes, out: Path, sources: list[str], opts: dict[str, Any]
    ) -> None:
        try:
            peers = await self._candidates(dataset_id, sources)
            net = self.net
            result = await fetch(net.host, net.ctx.db, self.store, dataset_id, peers, **opts)
            await trio.to_thread.run_sync(materialize, result.manifest, self.store, out)
            await net.ctx.db.transaction(lambda c: cache.keep(c, dataset_id))  # the operator's
            await self.offer(dataset_id)
            sealed = is_sealed(result.manifest)
            if sealed:
                key = net.ctx.keys.signing_key
                await trio.to_thread.run_sync(open_tree, out, key)
        except (*FETCH_ERRORS, SealError, tarfile.TarError) as exc:  # FilterError: a TarError
            job.state, job.error = "failed", str(exc)
            log.info("data get failed", extra={"dataset": dataset_id.hex()[:16], "error": str(exc)})
            return
        job.result = {
            "dataset_id": dataset_id.hex(), "out": str(out),
            "chunks_moved": result.chunks_moved, "bytes_moved": result.bytes_moved,
            "sealed": sealed,
            "sources": {p: vars(s) for p, s in result.sources.items()},
        }  # fmt: skip
        job.state = "complete"

    async def _candidates(self, dataset_id: bytes, sources: list[str]) -> list[str]:
        """Peer ids to probe: those named (multiaddrs dialled, peer ids located), else the
        dataset's providers in the DHT and the peers we are connected to."""
        host, peers = self.net.host, []
        for source in sources:
            if source.startswith("/"):
                peers.append(await host.connect(source))
            else:
                addrs = await locate(self.net, source)
                peers.append(await host.connect(addrs[0]) if addrs else source)
        if sources:
            return peers
        if self.net.dht is not None:
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                found = await self.net.dht.find_providers(dataset_key(dataset_id))
                for peer, addrs in found.items():
                    self.net.learn(addrs, "dht")
                    peers.append(peer)
        dht_found = len(peers)
        peers += host.connected_peers()[:MAX_ASKED]
        log.info("holders to probe", extra={"dht": dht_found, "connected": len(peers) - dht_found})
        if not peers:
            raise FetchFailed("no holder named (--from) and none found in the DHT or connected")
        return list(dict.fromkeys(peers))

    async def provide_loop(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        """Provides each offered dataset's id in the DHT (again every ``REPROVIDE_S``); one
        that no peer took yet (a fresh node's routing table is empty) is retried sooner."""
        pending: set[bytes] = set()
        provided_at: dict[bytes, float] = {}
        while True:
            with trio.move_on_after(RETRY_S if pending else REPROVIDE_S):
                pending.add(await receive.receive())
            if self.net.dht is None:
                pending.clear()  # p2p.dht = "off": holders are found by --from only
                continue
            now = trio.current_time()
            due = pending | {d for d, at in provided_at.items() if now - at >= REPROVIDE_S}
            for dataset_id in due:
                ok = False
                with trio.move_on_after(LOOKUP_TIMEOUT_S):
                    ok = await self.net.dht.provide(dataset_key(dataset_id))
                if ok:
                    provided_at[dataset_id] = now
                    pending.discard(dataset_id)
                else:
                    pending.add(dataset_id)
                # Not taken is normal on a node with no DHT peers yet: retried, said quietly.
                log.log(logging.INFO if ok else logging.DEBUG,
                        "dht provided dataset" if ok else "dht provide not taken yet",
                        extra={"dataset": dataset_id.hex()[:16]})  # fmt: skip


async def run_data(
    ctx: NodeContext, *, task_status: TaskStatus[DataService] = trio.TASK_STATUS_IGNORED
) -> None:
    """Runs the node's dataset service until cancelled (needs ``ctx.network``)."""
    assert ctx.network is not None
    store = local.chunk_store(ctx.home.root)
    server = TransferServer(ctx.network.host, store)
    server.register()
    send, receive = trio.open_memory_channel[bytes](1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_bulk)
        service = DataService(ctx.network, store, server, nursery, _to_provide=send)
        service.reserve_bytes = ctx.settings.worker.disk_reserve_mb << 20
        service.keep_ms = task_data_keep_ms(ctx.settings)
        held = await trio.to_thread.run_sync(local.complete_datasets, ctx.home.db, store)
        for dataset_id, manifest in held.items():
            await service.offer(dataset_id, manifest)
        nursery.start_soon(service.provide_loop, receive)
        if ctx.settings.node.task_data_expire_s:
            expire_ms = ctx.settings.node.task_data_expire_s * 1000
            nursery.start_soon(service.expire_loop, max(expire_ms, service.keep_ms))
        log.info("datasets served", extra={"datasets": len(held), "bulk_port": server.bulk_port})
        task_status.started(service)
