"""The dataset service's trees: a placement short of room writes nothing, one with room
links the task's folder to the tree; the tree of the operator's own dataset goes when no
task uses it any more (its chunks stay); one fetched for tasks stays with the cache.

Real sqlite, blob store, trees and dataset cache; the service's network and server are
stand-ins, as every chunk is here already (the dataset job test runs it all on daemons).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from node.market.blobshare import FetchFailed
from node.market.datasets import NoRoom
from node.transfer import local
from node.transfer.service import DataService
from node.transfer.task_cache import TaskCache
from storage import dataset_cache
from storage.db import Database
from tests.storage.test_transfer_files import make_tree


async def service(root: Path, db: Database, nursery: trio.Nursery) -> tuple[DataService, bytes]:
    """A service whose node added one dataset and wrote its tree out for a task."""
    src = root / "src"
    src.mkdir()
    make_tree(src)
    store, trees = local.chunk_store(root), local.trees(root)
    dataset_id, manifest = local.add(root / "node.sqlite", store, src)
    trees.build(dataset_id, manifest, store)
    net: Any = SimpleNamespace(ctx=SimpleNamespace(db=db, home=SimpleNamespace(db=db.path)))
    server: Any = SimpleNamespace(withdraw=lambda *_: None, offer=lambda *_: None)
    data = DataService(net, store, server, nursery, trees)
    data.cache = TaskCache(db, store, data.remove, data._fetching)
    return data, dataset_id


async def test_the_operators_dataset_loses_its_tree_when_its_last_task_ends(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data, dataset_id = await service(tmp_path, db, n)
        async with data.using([dataset_id]):
            async with data.using([dataset_id]):  # a sentry's replay beside the task
                pass
            assert data.trees.has(dataset_id), "a task still reads it"
        assert not data.trees.has(dataset_id)
        assert data.store.has(dataset_id.hex()), "the operator's chunks stay"


async def test_a_dataset_fetched_for_tasks_keeps_its_tree_for_the_next(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data, dataset_id = await service(tmp_path, db, n)
        await db.transaction(lambda c: dataset_cache.use(c, dataset_id, 1))
        async with data.using([dataset_id]):
            pass
        assert data.trees.has(dataset_id)
        removed = await data.remove(dataset_id)
        assert not data.trees.has(dataset_id) and removed.bytes_freed > 0


async def test_a_placement_without_room_fails_and_one_with_room_links_the_tree(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data, dataset_id = await service(tmp_path, db, n)
        await trio.to_thread.run_sync(data.trees.remove, dataset_id)  # as before any task
        data.net.host = SimpleNamespace(connected_peers=lambda: [])  # the chunks are all here
        assert data.cache is not None
        data.cache.reserve_bytes = shutil.disk_usage(tmp_path).free + (1 << 30)
        out = tmp_path / "task" / "corpus"
        with pytest.raises(NoRoom, match="no room for dataset"):
            await data.place(dataset_id, out, [])
        assert not data.trees.has(dataset_id) and not out.exists()
        data.cache.reserve_bytes = 0
        await data.place(dataset_id, out, [])
        tree = data.trees.path(dataset_id)
        assert (out / "big.bin").stat().st_ino == (tree / "big.bin").stat().st_ino
        assert (out / "big.bin").stat().st_mode & 0o777 == 0o444


async def test_a_held_dataset_is_placed_only_for_a_peer_that_serves_it_to_us(
    tmp_path: Path,
) -> None:
    """Held here from another requester's job, a private dataset would otherwise go to any
    requester that names its id (ids are public: demands carry them)."""
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data, dataset_id = await service(tmp_path, db, n)
        data.net.host = SimpleNamespace(connected_peers=lambda: ["mallory", "owner"])
        serving = {"owner"}

        async def served_by(peer: str, _dataset_id: bytes) -> bool:
            return peer in serving

        data.served_by = served_by  # type: ignore[method-assign]
        out = tmp_path / "task" / "corpus"
        with pytest.raises(FetchFailed, match="does not serve dataset"):
            await data.place(dataset_id, out, ["mallory", "owner"])
        assert not out.exists()
        await data.place(dataset_id, out, ["owner", "mallory"])
        assert (out / "big.bin").exists()
