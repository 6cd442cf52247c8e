"""A worker's disk: a task whose data would not fit gets no bid (the requester is told why and
the task goes to another worker), and a disk that fills while a task fetches stops that task,
not the worker.

Real job manager, worker services, sqlite and the real disk measure; in-memory network; trio's
mock clock. The datasets are a stand-in (:class:`Shelf`): the simulation has no transfer
layer (``tests/integration/test_dataset_jobs.py`` runs the real one), and a full disk cannot
be made on demand here.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.market.spec import parse_spec
from node.market.datasets import Disk
from node.market.requester import JobManager
from tests.services.memnet import Hub
from tests.services.sim import SmallMarket, inline_threads, small_market

DATASET = bytes.fromhex("ab" * 32)
DATASET_BYTES = 5_000_000


class Shelf:
    """Datasets (:class:`node.market.datasets.Datasets`) held in name only; ``full`` makes
    placing one fail the way a full disk does."""

    def __init__(self, sizes: dict[bytes, int], *, full: bool = False) -> None:
        self.sizes, self.full = sizes, full

    async def unusable(self, dataset_id: bytes) -> str:
        return "" if dataset_id in self.sizes else "not held whole here"

    async def size(self, dataset_id: bytes) -> int:
        return self.sizes.get(dataset_id, 0)

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        pass

    @asynccontextmanager
    async def using(self, ids: list[bytes]) -> AsyncIterator[None]:
        yield

    async def evictable(self) -> int:
        return 0  # nothing cached

    def placed(self, dataset_id: bytes, where: Path) -> bool:
        return False  # never written out for tasks: each takes its room

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        out.mkdir(parents=True)
        (out / "data").write_bytes(b"x")


def spec() -> dict:
    return parse_spec({
        "kind": "exec", "verification": "none",
        "runtime": {"command": ["sim"], "segments": 2, "estimate_s": 10},
        "io": {"inputs": ["input.txt"], "outputs": ["out"],
               "datasets": {"corpus": DATASET.hex()}},
        "budget": {"max_total": 10**15, "max_price_per_s": 200, "deadline": "2h"},
    })  # fmt: skip


async def two_workers(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, cheap_disk_full: bool
) -> SmallMarket:
    """A requester holding the dataset, and a cheap and a dear worker holding none."""
    inline_threads(monkeypatch)
    market = await small_market(Hub(), root, [100, 200], 3.0)
    (cheap, dear) = market.workers
    market.requester.share.datasets = Shelf({DATASET: DATASET_BYTES})
    cheap.share.datasets = Shelf({}, full=cheap_disk_full)
    dear.share.datasets = Shelf({})
    return market


async def run_to_the_end(market: SmallMarket, root: Path) -> list[dict[str, object]]:
    """Runs one job on the market until it is verified; returns its attempts."""
    jobs: JobManager = market.jobs
    async with trio.open_nursery() as nursery:
        for node in market.workers:
            nursery.start_soon(node.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(spec(), root)
        with trio.fail_after(600):
            while (await jobs.store.task(job_id, 0)).state != "verified":
                await jobs.wait_for_change()
        nursery.cancel_scope.cancel()
    attempts = [dict(row) for row in await jobs.store.attempts(job_id)]
    for node in (market.requester, *market.workers):
        await node.db.close()
    return attempts


async def test_a_worker_without_room_for_the_data_says_so_and_another_takes_the_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = await two_workers(tmp_path, monkeypatch, cheap_disk_full=False)
    (cheap, dear) = market.workers
    cheap.worker.disk = Disk(cheap.root, reserve_bytes=2**62)  # type: ignore[union-attr]
    attempts = await run_to_the_end(market, tmp_path)
    assert [a["worker"] for a in attempts] == [dear.net.peer_id]
    [refused] = [d["decision"] for d in cheap.worker.decisions]  # type: ignore[union-attr]
    # Not held there: a copy in the chunk store and one in the task's folder, and the inputs.
    assert refused.startswith("no room for its data: needs 10 MB, 0 MB free"), refused
    assert [d["decision"] for d in dear.worker.decisions] == ["bid"]  # type: ignore[union-attr]


async def test_a_disk_that_fills_while_placing_data_stops_the_task_and_not_the_worker(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = await two_workers(tmp_path, monkeypatch, cheap_disk_full=True)
    (cheap, dear) = market.workers
    attempts = await run_to_the_end(market, tmp_path)
    assert [a["worker"] for a in attempts] == [cheap.net.peer_id, dear.net.peer_id]
    (stopped,) = cheap.worker.works.values()  # type: ignore[union-attr]
    assert stopped.state == "stopped"
    assert stopped.error == "this worker's disk: [Errno 28] No space left on device"
    assert cheap.worker.bidder.running() == []  # type: ignore[union-attr]  # free for more
