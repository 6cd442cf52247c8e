"""A requester that runs job after job keeps nothing in memory for the jobs that have ended.

Its orders grant each worker the job's inputs (and, after a failover, the resume point);
a grant serves only the fetches of an attempt of the job, so it goes once none of the job's
tasks has a runner, not a week later when file expiry deletes the file (at 30 jobs a minute
that was a set per job, some 300,000 of them in that week). A job's other tasks, still
running, keep theirs. Real job manager, worker services, blob shares and sqlite; in-memory
network; trio's mock clock.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio
import trio.testing

from consensus.kinds import from_wire
from consensus.market.messages import BlobRef
from consensus.market.spec import JobSpec, parse_spec
from node.market.requester import JobManager
from tests.services.memnet import Hub
from tests.services.sim import SmallMarket, inline_threads, small_market, worker_service

SEGMENT_S = 3.0
JOBS = 10
FINAL = ("verified", "failed", "cancelled")


def spec(tasks: int) -> JobSpec:
    return parse_spec({
        "kind": "exec", "tasks": tasks, "split": "shards" if tasks > 1 else "none",
        "verification": "none",
        "runtime": {"command": ["sim"], "segments": 4, "estimate_s": 10},
        "io": {"inputs": ["input.txt"], "outputs": ["out"]},
        "budget": {"max_total": 10**15, "max_price_per_s": 200, "deadline": "2h"},
    })  # fmt: skip


async def until_state(jobs: JobManager, job_id: bytes, idx: int, states: tuple[str, ...]) -> None:
    with trio.fail_after(600):
        while (await jobs.store.task(job_id, idx)).state not in states:
            await jobs.wait_for_change()


async def ended(jobs: JobManager, job_id: bytes) -> None:
    """Waits until every task of the job is final and its runners have returned."""
    for task in await jobs.store.tasks(job_id):
        await until_state(jobs, job_id, task.idx, FINAL)
    await trio.testing.wait_all_tasks_blocked()


async def inputs_of(jobs: JobManager, job_id: bytes) -> BlobRef:
    row = await jobs.store.job(job_id)
    assert row is not None and row["inputs"] is not None
    return from_wire(BlobRef, msgpack.unpackb(row["inputs"]))


async def two_speed_market(tmp_path: Path) -> SmallMarket:
    """Two workers, the dearer one four times slower: a job's two tasks end far apart."""
    market = await small_market(Hub(), tmp_path, [100, 150], SEGMENT_S)
    market.workers[1].worker = worker_service(market.workers[1], 150, 4 * SEGMENT_S)
    return market


async def test_a_jobs_grants_stay_while_a_task_of_it_runs_and_go_when_none_does(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_threads(monkeypatch)
    market = await two_speed_market(tmp_path)
    jobs, share = market.jobs, market.requester.share
    async with trio.open_nursery() as nursery:
        for worker in market.workers:
            nursery.start_soon(worker.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(spec(2), tmp_path)
        inputs = await inputs_of(jobs, job_id)
        with trio.fail_after(600):
            while not {t.state for t in await jobs.store.tasks(job_id)} & {"verified"}:
                await jobs.wait_for_change()
        await trio.testing.wait_all_tasks_blocked()
        running = [t for t in await jobs.store.tasks(job_id) if t.state not in FINAL]
        assert len(running) == 1, "one task ended first, the other still runs"
        attempt = await jobs.store.attempt(running[0].ref)
        assert attempt is not None
        assert share._is_granted(attempt["worker"], inputs.hash), "its worker may still fetch"

        await ended(jobs, job_id)
        assert share._grants == {}, "nothing of the ended job is granted any more"
        assert (await jobs.store.job(job_id))["state"] == "verified"  # type: ignore[index]

        for _ in range(JOBS):  # one after another, as a soak runs them
            job_id = await jobs.submit(spec(1), tmp_path)
            await ended(jobs, job_id)
            assert (await jobs.store.job(job_id))["state"] == "verified"  # type: ignore[index]
            assert share._grants == {} and jobs._granted == {}
        nursery.cancel_scope.cancel()
    for node in (market.requester, *market.workers):
        await node.db.close()
