"""Datasets fetched for tasks: pinned while a task or a replay uses them, deleted (oldest use
first) when another task's data needs the room, and when unused past the node's expiry.

The rule is pure (:mod:`consensus.transfer.eviction`); this is its driver. A task (a
worker's run, a sentry's replay) holds its datasets with :meth:`TaskCache.using` for as long
as it reads them; leaving marks them used, so a worker's copy then stays ``keep_ms`` for the
sentries that fetch it. Room is measured and taken under one lock, and what a placement has
taken stays counted (``_reserved``) until its fetch ends, so two placements never spend the
same free bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from consensus.transfer.eviction import Cached, idle, to_evict
from consensus.transfer.manifest import Manifest
from node.market.datasets import NoRoom, free_bytes, room_needed
from node.transfer import local
from node.transfer.run import now_ms
from storage import dataset_cache as cache
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

EXPIRY_CHECK_S = 600.0  # the expiry sweep runs at least this often (sooner for short expiries)


@dataclass
class TaskCache:
    db: Database
    store: BlobStore
    remove: Callable[[bytes], Awaitable[local.Removed]]  # DataService.remove
    fetching: Callable[[bytes], bool]  # a fetch of it is writing now
    reserve_bytes: int = 0  # disk no dataset may take (worker.disk_reserve_mb)
    keep_ms: int = 0  # a dataset a task used stays this long (task_data_keep_ms)
    tree_bytes: dict[bytes, int] = field(default_factory=dict)  # DataService's: trees here
    _pins: Counter[bytes] = field(default_factory=Counter)
    _room: trio.Lock = field(default_factory=trio.Lock)
    _reserved: int = 0

    @asynccontextmanager
    async def using(self, ids: Iterable[bytes]) -> AsyncIterator[None]:
        """Keeps ``ids`` from deletion while the block runs; marks them used when it ends."""
        held = sorted(set(ids))
        self._pins.update(held)
        try:
            yield
        finally:
            self._pins.subtract(held)
            self._pins += Counter()  # drops the zeros
            now = now_ms()
            with trio.CancelScope(shield=True):
                await self.db.transaction(lambda c: cache.touch(c, held, now))

    def pinned(self) -> frozenset[bytes]:
        return frozenset(self._pins)

    async def evictable(self) -> int:
        """Bytes that deleting idle cached datasets could free now (for a bid: nothing goes
        until a task is placed)."""
        entries = await self._cached()
        return sum(c.size for c in idle(entries, busy=self.pinned(), now_ms=now_ms(),
                                           keep_ms=self.keep_ms))  # fmt: skip

    async def size(self) -> tuple[int, int]:
        """How many datasets fetched for tasks are held here, and their bytes."""
        entries = await self._cached(include_fetching=True)
        return len(entries), sum(c.size for c in entries)

    @asynccontextmanager
    async def room_for(self, dataset_id: bytes, manifest: Manifest) -> AsyncIterator[None]:
        """Takes the room to place ``dataset_id`` for the block (deleting idle cached
        datasets if need be).

        Raises:
            NoRoom: there is none beyond ``reserve_bytes``, even then.
        """
        need = await trio.to_thread.run_sync(room_needed, manifest, self.store.has)
        async with self._room:
            free = await self._free()
            if need > free:
                chosen = to_evict(await self._cached(), needed=need - free,
                                  busy=self.pinned() | {dataset_id}, now_ms=now_ms(),
                                  keep_ms=self.keep_ms)  # fmt: skip
                if await self._evict(chosen, await self._cached(), "dataset evicted"):
                    free = await self._free()
            if need > free:
                raise NoRoom(
                    f"no room for dataset {dataset_id.hex()[:16]}: needs {-(-need >> 20)} MB, "
                    f"{max(0, free) >> 20} MB free beyond the {self.reserve_bytes >> 20} MB "
                    "reserve"
                )
            self._reserved += need
        try:
            yield
        finally:
            self._reserved -= need

    async def expire_loop(self, after_ms: int) -> None:
        """Deletes datasets fetched for tasks once unused for ``after_ms``, until cancelled."""
        while True:
            await trio.sleep(min(max(after_ms / 4000, 1.0), EXPIRY_CHECK_S))
            try:
                entries = await self._cached()
                stale = idle(entries, busy=self.pinned(), now_ms=now_ms(), keep_ms=after_ms)
                await self._evict([c.dataset_id for c in stale], entries, "dataset expired")
            except Exception:  # the next sweep tries again; the node goes on
                log.exception("dataset expiry failed")

    async def _free(self) -> int:
        where: Path = self.store.root
        free = await trio.to_thread.run_sync(free_bytes, where)
        return free - self.reserve_bytes - self._reserved

    async def _cached(self, *, include_fetching: bool = False) -> list[Cached]:
        """The datasets fetched for tasks (but those a fetch is writing now)."""
        used, rows = await self.db.transaction(lambda c: (cache.cached(c), journal.transfers(c)))
        return [
            Cached(
                r.dataset_id,
                used[r.dataset_id],
                r.bytes_total + self.tree_bytes.get(r.dataset_id, 0),
            )
            for r in rows
            if r.dataset_id in used and (include_fetching or not self.fetching(r.dataset_id))
        ]

    async def _evict(self, ids: list[bytes], entries: list[Cached], what: str) -> int:
        """Deletes each of ``ids`` that can go now; returns the bytes freed."""
        freed, now, used = 0, now_ms(), {c.dataset_id: c.used_ms for c in entries}
        for dataset_id in ids:
            try:
                removed = await self.remove(dataset_id)
            except (KeyError, RuntimeError):  # removed or being fetched since we looked
                continue
            except Exception:  # e.g. sqlite busy: this one stays, the others may go
                log.exception("dataset not deleted", extra={"dataset": dataset_id.hex()[:16]})
                continue
            freed += removed.bytes_freed
            idle_s = (now - used.get(dataset_id, now)) // 1000
            log.info(what, extra={"dataset": dataset_id.hex()[:16], "idle_s": idle_s,
                                  "bytes_freed": removed.bytes_freed})  # fmt: skip
        return freed
