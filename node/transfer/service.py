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
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus.errors import Invalid
from consensus.peer_id import short
from consensus.transfer.manifest import DEFAULT_LIMITS, Manifest, decode_manifest
from node.discovery import LOOKUP_TIMEOUT_S, REPROVIDE_S, locate
from node.market.blobshare import FetchFailed as TaskFetchFailed
from node.market.datasets import task_data_keep_ms
from node.market.sealing import SealError
from node.transfer import local
from node.transfer.fetcher import FetchFailed, fetch, fetch_manifest
from node.transfer.probe import probe
from node.transfer.run import now_ms
from node.transfer.sealed import is_sealed, open_tree
from node.transfer.server import TransferServer
from node.transfer.task_cache import TaskCache
from p2p.host import DialError
from storage import dataset_cache as cache
from storage import transfer_access as access
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.dataset_trees import Trees
from storage.errors import CorruptBlob
from storage.transfer_files import UnsafeTarget, link_into, materialize

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext
    from node.network import Network

log = logging.getLogger(__name__)

RETRY_S = 5.0  # a dataset id no DHT peer took yet is provided again this soon
MAX_ASKED = 32  # connected peers probed for a dataset nobody named
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
    trees: Trees  # each dataset tasks use, written out once (read-only)
    tree_bytes: dict[bytes, int] = field(default_factory=dict)  # of the trees here
    _copied: set[bytes] = field(default_factory=set)  # warned of: copied, not linked
    jobs: dict[bytes, Job] = field(default_factory=dict)
    _to_provide: trio.MemorySendChannel[bytes] | None = None
    # One fetch per dataset; a lock is dropped once no task holds or waits on it.
    _placing: dict[bytes, trio.Lock] = field(default_factory=dict)
    cache: TaskCache | None = None  # datasets fetched for tasks (set by run_data)

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

        Its files, not its chunks: a worker writes each file out in full (once, for all its
        tasks), and the chunk store never holds more than that.
        """
        manifest = await self._complete(dataset_id)
        return 0 if manifest is None else manifest.files_bytes

    async def _complete(self, dataset_id: bytes) -> Manifest | None:
        """The manifest of ``dataset_id`` if the journal has it whole here, else None."""
        if not await self.net.ctx.db.transaction(lambda c: journal.is_complete(c, dataset_id)):
            return None
        raw = await trio.to_thread.run_sync(self.store.get, dataset_id.hex())
        return decode_manifest(raw, dataset_id)

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from us (kept in sqlite, like ``data grant``)."""
        now = now_ms()
        await self.net.ctx.db.transaction(lambda c: access.grant(c, dataset_id, [peer], now))
        self.server.grant(peer, dataset_id)

    async def lend(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from us until :meth:`unlend` or this node stops
        (not in sqlite)."""
        self.server.lend(peer, dataset_id)

    async def unlend(self, peer: str, dataset_id: bytes) -> None:
        self.server.unlend(peer, dataset_id)

    async def served_by(self, peer: str, dataset_id: bytes) -> bool:
        """Whether ``peer`` serves ``dataset_id`` to us now (one probe)."""
        return (await probe(self.net.host, peer, dataset_id)).has

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        """Puts ``dataset_id`` in ``out`` as hard links to its one read-only copy here
        (:mod:`storage.dataset_trees`), first fetching what is missing from ``holders`` and
        writing that copy out; afterwards this node serves it to whom it grants it (a sentry
        checking the task).

        Raises:
            node.market.blobshare.FetchFailed: not fetched whole, or sealed.
            NoRoom: no room for it here (ours: the task is not at fault).
        """
        async with self._placing_lock(dataset_id):  # two tasks on one: the second finds it here
            if holders:
                await self._served_by_first(dataset_id, holders[0])
            if not self.trees.has(dataset_id):  # a tree is renamed into place only when whole
                await self._write_tree(dataset_id, holders)
            if not self.trees.linkable(out) and dataset_id not in self._copied:
                self._copied.add(dataset_id)
                log.warning("dataset copied into each task's folder, not linked: the task "
                            "folders are on another filesystem than the node's data dir",
                            extra={"dataset": dataset_id.hex()[:16]})  # fmt: skip
            # under the lock: `data rm` and evictions take it before they delete the tree
            await trio.to_thread.run_sync(link_into, self.trees.path(dataset_id), out)

    async def _write_tree(self, dataset_id: bytes, holders: list[str]) -> None:
        held = await self._complete(dataset_id) is not None
        try:
            manifest = await _flat_errors(self._place(dataset_id, holders))
        except FETCH_ERRORS as exc:
            raise TaskFetchFailed(str(exc)) from exc
        finally:
            if not held:  # fetched for a task, whole or not: the cache's, to go in time
                with trio.CancelScope(shield=True):
                    await self._cached_now(dataset_id)
        self.tree_bytes[dataset_id] = manifest.files_bytes
        await self.offer(dataset_id, manifest)

    async def _served_by_first(self, dataset_id: bytes, owner: str) -> None:
        """Places a task's data only for a peer that serves it to us (its requester; for a
        sentry, the worker): a dataset held here already, from another requester's job,
        would otherwise go to any requester that names its id, and ids are public (demands
        carry them).

        Raises:
            node.market.blobshare.FetchFailed: ``owner`` does not serve it to us, or cannot
                be reached.
        """
        try:
            if owner not in self.net.host.connected_peers():
                await self._candidates(dataset_id, [owner])  # dials it
            serves = await self.served_by(owner, dataset_id)
        except FETCH_ERRORS as exc:
            raise TaskFetchFailed(str(exc)) from exc
        if not serves:
            raise TaskFetchFailed(
                f"{short(owner)} does not serve dataset {dataset_id.hex()[:16]} to us"
            )

    def placed(self, dataset_id: bytes, where: Path) -> bool:
        """Whether ``dataset_id``'s read-only copy is here, on the filesystem of ``where``
        (the task folders): a task then links to it and takes no disk for it."""
        return self.trees.has(dataset_id) and self.trees.linkable(where)

    async def _place(self, dataset_id: bytes, holders: list[str]) -> Manifest:
        # The first holder (whose data it is) was dialled by place(); the others (the job's
        # other workers) only help, so they are used when connected and never wait a dial.
        connected = set(self.net.host.connected_peers())
        peers = [h for h in holders if h in connected]
        net, cache_ = self.net, self._cache()
        manifest = await fetch_manifest(net.host, self.store, dataset_id, peers, DEFAULT_LIMITS)
        async with cache_.room_for(dataset_id, manifest):
            result = await fetch(net.host, net.ctx.db, self.store, dataset_id, peers, bulk=True)
            if is_sealed(result.manifest):
                raise FetchFailed("a sealed dataset: a job's datasets are added without --for")
            log.info("dataset placed", extra={"dataset": dataset_id.hex()[:16],
                                              "chunks_moved": result.chunks_moved,
                                              "bytes_moved": result.bytes_moved})  # fmt: skip
            await trio.to_thread.run_sync(self.trees.build, dataset_id, result.manifest, self.store)
        return result.manifest

    async def _cached_now(self, dataset_id: bytes) -> None:
        now = now_ms()
        await self.net.ctx.db.transaction(lambda c: cache.use(c, dataset_id, now))

    def _cache(self) -> TaskCache:
        assert self.cache is not None, "run_data sets the cache"
        return self.cache

    @asynccontextmanager
    async def using(self, ids: list[bytes]) -> AsyncIterator[None]:
        """Keeps ``ids`` while a task or a replay reads them (node.market.datasets).

        The tree of a dataset the operator holds (added, or fetched with ``data get``) goes
        when no task uses it any more: its chunks are kept for good, and a tree kept too would
        double what it takes. One fetched for tasks keeps its tree until the cache deletes it.
        """
        try:
            async with self._cache().using(ids):
                yield
        finally:
            with trio.CancelScope(shield=True):
                await self._drop_idle_trees(ids)

    async def _drop_idle_trees(self, ids: list[bytes]) -> None:
        cached = await self.net.ctx.db.transaction(cache.cached)
        pinned = self._cache().pinned()
        for dataset_id in ids:
            if dataset_id in cached or dataset_id in pinned or not self.trees.has(dataset_id):
                continue
            async with self._placing_lock(dataset_id):
                if dataset_id not in self._cache().pinned():  # none began while we waited
                    self.tree_bytes.pop(dataset_id, None)
                    await trio.to_thread.run_sync(self.trees.remove, dataset_id)

    async def evictable(self) -> int:
        return await self._cache().evictable()

    async def cache_size(self) -> tuple[int, int]:
        return await self._cache().size()

    @asynccontextmanager
    async def _placing_lock(self, dataset_id: bytes) -> AsyncIterator[None]:
        """Holds ``dataset_id``'s lock: placements, tree drops and removals of one dataset
        take turns."""
        lock = self._placing.setdefault(dataset_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._drop_idle_lock(dataset_id, lock)

    def _drop_idle_lock(self, dataset_id: bytes, lock: trio.Lock) -> None:
        """Forgets ``lock`` unless a task holds or waits on it: the next to need one makes a
        fresh one, and one lock per dataset ever placed would stay for good otherwise."""
        held = lock.statistics()
        if not held.locked and not held.tasks_waiting and self._placing.get(dataset_id) is lock:
            del self._placing[dataset_id]

    def _fetching(self, dataset_id: bytes) -> bool:
        """Whether a task is placing ``dataset_id`` or ``data get`` is fetching it."""
        job, lock = self.jobs.get(dataset_id), self._placing.get(dataset_id)
        return (job is not None and job.state == "fetching") or (lock is not None and lock.locked())

    async def remove(self, dataset_id: bytes) -> local.Removed:
        """Stops serving ``dataset_id`` and deletes it here (chunks other datasets use stay).

        Raises:
            KeyError: nothing is recorded of it here.
            RuntimeError: a fetch of it is running (a task placing it, or ``data get``).
        """
        busy = RuntimeError(f"dataset {dataset_id.hex()[:16]} is being fetched: try later")
        job = self.jobs.get(dataset_id)
        if job is not None and job.state == "fetching":
            raise busy
        lock = self._placing.setdefault(dataset_id, trio.Lock())
        try:
            lock.acquire_nowait()  # no placement starts on it while it goes
        except trio.WouldBlock:
            raise busy from None
        try:
            self.server.withdraw(dataset_id)  # the provide loop drops what is not offered
            removed = await trio.to_thread.run_sync(self._remove_here, dataset_id)
        finally:
            lock.release()
            self._drop_idle_lock(dataset_id, lock)
        log.info("dataset removed", extra={"dataset": dataset_id.hex()[:16], **vars(removed)})
        return removed

    def _remove_here(self, dataset_id: bytes) -> local.Removed:
        self.tree_bytes.pop(dataset_id, None)
        self._copied.discard(dataset_id)
        return local.remove(self.net.ctx.home.db, self.store, self.trees, dataset_id)

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
            "sealed": sealed, "opened": sealed,
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
        that no peer took yet (a fresh node's routing table is empty) is retried sooner. One
        no longer offered (removed, evicted) is dropped: we would announce data we lack."""
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
                if not self.server.offers(dataset_id):  # removed or evicted since
                    pending.discard(dataset_id)
                    provided_at.pop(dataset_id, None)
                    continue
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
        trees = local.trees(ctx.home.root)
        service = DataService(ctx.network, store, server, nursery, trees, _to_provide=send)
        service.cache = TaskCache(
            ctx.db, store, service.remove, service._fetching,
            reserve_bytes=ctx.settings.worker.disk_reserve_mb << 20,
            keep_ms=task_data_keep_ms(ctx.settings), tree_bytes=service.tree_bytes,
        )  # fmt: skip
        held = await trio.to_thread.run_sync(local.complete_datasets, ctx.home.db, store)
        swept = await trio.to_thread.run_sync(trees.sweep, held)
        if swept:
            log.info("dataset trees swept", extra={"trees": len(swept)})
        service.tree_bytes.update({d: m.files_bytes for d, m in held.items() if trees.has(d)})
        for dataset_id, manifest in held.items():
            await service.offer(dataset_id, manifest)
        nursery.start_soon(service.provide_loop, receive)
        if ctx.settings.node.task_data_expire_s:
            expire_ms = ctx.settings.node.task_data_expire_s * 1000
            nursery.start_soon(service.cache.expire_loop, max(expire_ms, service.cache.keep_ms))
        log.info("datasets served", extra={"datasets": len(held), "bulk_port": server.bulk_port})
        task_status.started(service)


async def _flat_errors(work: Awaitable[Manifest]) -> Manifest:
    """``work``'s result; an error from deep in a fetch's nurseries comes out of its
    exception groups: alone, or as the first of several disk errors (a full disk fails every
    chunk being written at once), so callers can catch it by type."""
    try:
        return await work
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1 or all(isinstance(e, OSError) for e in leaves):
            raise leaves[0] from group
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
