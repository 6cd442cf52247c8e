"""The dataset service forgets a dataset once it is removed: it stops providing it in the DHT,
keeps no lock for it (nor for any dataset no task is placing), and its server drops the
dataset's served count. A lock some task holds or waits on stays, or two placements of one
dataset would run at once.

Real sqlite, blob store, trees, dataset cache and transfer server; the network (the DHT
included) is a stand-in, and the DHT's hour between provides runs on a mock clock.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from node.discovery import REPROVIDE_S
from node.transfer import local
from node.transfer.server import ANYONE, TransferServer, _Reply
from node.transfer.service import DataService, dataset_key
from node.transfer.task_cache import TaskCache
from storage.db import Database
from tests.storage.test_transfer_files import make_tree


class Dht:
    """Records what is provided, and when (on the trio clock)."""

    def __init__(self) -> None:
        self.provided: list[tuple[float, str]] = []
        self.changed = trio.Event()

    async def provide(self, key: str) -> bool:
        self.provided.append((trio.current_time(), key))
        self.changed.set()
        self.changed = trio.Event()
        return True

    def times(self, key: str) -> int:
        return sum(k == key for _, k in self.provided)


async def service(root: Path, db: Database, nursery: trio.Nursery) -> DataService:
    store, trees = local.chunk_store(root), local.trees(root)
    net: Any = SimpleNamespace(
        ctx=SimpleNamespace(db=db, home=SimpleNamespace(db=db.path)),
        dht=Dht(),
        host=SimpleNamespace(connected_peers=lambda: []),
    )
    send, receive = trio.open_memory_channel[bytes](16)
    server = TransferServer(net.host, store)
    data = DataService(net, store, server, nursery, trees, _to_provide=send)
    data.cache = TaskCache(db, store, data.remove, data._fetching)
    nursery.start_soon(data.provide_loop, receive)
    return data


def add(data: DataService, root: Path, name: str) -> bytes:
    src = root / name
    src.mkdir()
    make_tree(src)
    dataset_id, manifest = local.add(data.net.ctx.home.db, data.store, src)
    data.trees.build(dataset_id, manifest, data.store)
    return dataset_id


async def until(dht: Dht, done: Any) -> None:
    while not done():
        await dht.changed.wait()


async def test_a_removed_dataset_is_provided_no_more_and_leaves_no_lock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data = await service(tmp_path, db, n)
        dht: Any = data.net.dht
        kept, gone = add(data, tmp_path, "kept"), add(data, tmp_path, "gone")
        await data.offer(kept)
        await data.offer(gone)
        with trio.fail_after(60):
            await until(dht, lambda: dht.times(dataset_key(gone)) == 1)
        await data.place(gone, tmp_path / "task" / "corpus", [])
        assert gone not in data._placing, "no task places it now"
        await data.remove(gone)
        assert gone not in data._placing and not data.server.offers(gone)
        # The mock clock jumps while sqlite works in its thread: count from here.
        before, rounds = dht.times(dataset_key(gone)), dht.times(dataset_key(kept))
        with trio.fail_after(3 * REPROVIDE_S):  # the next reprovides
            await until(dht, lambda: dht.times(dataset_key(kept)) == rounds + 2)
        assert dht.times(dataset_key(gone)) == before, "not announced once removed"
        n.cancel_scope.cancel()


async def test_a_lock_a_task_waits_on_stays_until_the_last_leaves(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db, trio.open_nursery() as n:
        data = await service(tmp_path, db, n)
        dataset_id = add(data, tmp_path, "src")
        release, second_in, second_out = trio.Event(), trio.Event(), trio.Event()

        async def first() -> None:
            async with data._placing_lock(dataset_id):
                await release.wait()

        async def second() -> None:
            async with data._placing_lock(dataset_id):
                second_in.set()
                await second_out.wait()

        with trio.fail_after(10):
            n.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()  # the second waits on the first
            release.set()
            await second_in.wait()
            assert data._fetching(dataset_id)
            with pytest.raises(RuntimeError, match="being fetched"):
                await data.remove(dataset_id)  # the lock is the one the second holds
            second_out.set()
            await trio.testing.wait_all_tasks_blocked()
        assert data._placing == {} and not data._fetching(dataset_id)
        await data.remove(dataset_id)
        n.cancel_scope.cancel()


class HeldServer(TransferServer):
    """Holds each chunk read until ``go`` is set."""

    go = trio.Event()

    async def read_chunk(self, digest: str) -> bytes:
        await self.go.wait()
        return await super().read_chunk(digest)


async def test_a_withdrawn_dataset_leaves_no_served_count(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    store = local.chunk_store(tmp_path)
    async with await Database.open(tmp_path / "node.sqlite") as db:
        dataset_id, manifest = local.add(db.path, store, src)
    host: Any = SimpleNamespace()
    server = HeldServer(host, store)
    HeldServer.go = trio.Event()
    server.offer(dataset_id, manifest)
    server.grant(ANYONE, dataset_id)
    ask = {"d": dataset_id, "i": 0}
    HeldServer.go.set()
    await server._answer(_Reply(), "peer", ask, plain=False)
    assert server.served[dataset_id] == 1
    server.withdraw(dataset_id)
    assert dataset_id not in server.served
    server.offer(dataset_id, manifest)
    server.grant(ANYONE, dataset_id)
    HeldServer.go = trio.Event()
    async with trio.open_nursery() as n:
        n.start_soon(functools.partial(server._answer, _Reply(), "peer", ask, plain=False))
        await trio.testing.wait_all_tasks_blocked()  # the chunk is being read
        server.withdraw(dataset_id)
        HeldServer.go.set()
    assert dataset_id not in server.served, "a chunk read across the withdrawal counts not"
