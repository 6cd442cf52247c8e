"""100 jobs over 10 workers, workers dying and coming back: every job ends verified or failed
with a reason, no task is done twice, resumed tasks end in the right state, nobody is paid
more than vouched or than a failover allows.

Real job manager, worker services, sqlite and envelopes; in-memory network; trio's mock
clock, so about an hour of market time runs in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio
import trio.testing

from consensus.market.spec import parse_spec
from node.market.requester import JobManager
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, SimNode, final_state, make_node, pool_entry, worker_service

WORKERS, JOBS, SEGMENTS, SEGMENT_S = 10, 100, 4, 3.0
FINAL = ("verified", "failed", "cancelled")


def spec(tasks: int) -> dict:
    return parse_spec({
        "kind": "exec", "tasks": tasks, "split": "shards" if tasks > 1 else "none",
        "verification": "none",
        "runtime": {"command": ["sim"], "segments": SEGMENTS, "estimate_s": 10},
        "io": {"inputs": ["input.txt"], "outputs": ["out"]},
        "budget": {"max_total": 10**15, "max_price_per_s": 200, "deadline": "2h"},
    })  # fmt: skip


async def run_worker(node: SimNode, price: int) -> None:
    node.worker = worker_service(node, price, SEGMENT_S)
    with node.scope:
        await node.worker.run()


async def chaos(hub: Hub, workers: list[SimNode], prices: list[int], nursery: trio.Nursery,
                rng: random.Random) -> None:  # fmt: skip
    """Kills a random worker every so often (as kill -9 would) and restarts it later."""
    for _ in range(12):
        await trio.sleep(rng.uniform(5, 30))
        busy = [i for i, w in enumerate(workers) if w.worker and w.worker.bidder.running()]
        victim = rng.choice(busy or range(len(workers)))
        node = workers[victim]
        hub.kill(node.net.peer_id)
        node.scope.cancel()
        await trio.sleep(rng.uniform(5, 30))
        hub.revive(node.net.peer_id)
        node.scope = trio.CancelScope()
        nursery.start_soon(run_worker, node, prices[victim])


async def run_requester(node: SimNode, scratch: Path, *, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
    node.jobs = JobManager(node.net, node.store, node.share, scratch, PARAMS)
    with node.scope:
        await node.jobs.run(task_status=task_status)


async def restart_requester(hub: Hub, node: SimNode, scratch: Path, nursery: trio.Nursery) -> None:
    """kill -9 the requester mid-run, and start it again from its sqlite."""
    await trio.sleep(45)
    hub.kill(node.net.peer_id)
    node.scope.cancel()
    await trio.sleep(5)
    hub.revive(node.net.peer_id)
    node.scope = trio.CancelScope()
    await nursery.start(run_requester, node, scratch)


async def test_a_hundred_jobs_over_ten_dying_workers(
    tmp_path: Path, autojump_clock: object
) -> None:
    rng = random.Random(20261124)
    hub = Hub()
    (tmp_path / "input.txt").write_text("data\n")
    requester = await make_node(hub, tmp_path / "requester", "requester")
    workers = [await make_node(hub, tmp_path / f"w{i}", f"worker-{i}") for i in range(WORKERS)]
    prices = [100 + 10 * i for i in range(WORKERS)]
    hub.pool = [pool_entry(w, p) for w, p in zip(workers, prices, strict=True)]
    async with trio.open_nursery() as nursery:
        for node, price in zip(workers, prices, strict=True):
            nursery.start_soon(run_worker, node, price)
        await nursery.start(run_requester, requester, tmp_path / "scratch")
        assert requester.jobs is not None
        ids = [await requester.jobs.submit(spec(rng.choice((1, 1, 2))), tmp_path)
               for _ in range(JOBS)]  # fmt: skip
        nursery.start_soon(chaos, hub, workers, prices, nursery, rng)
        nursery.start_soon(restart_requester, hub, requester, tmp_path / "scratch", nursery)
        # About 200 s of work for ten workers; far longer means tasks stalled (the jobs'
        # deadline, 2 h, would still end them, so a stall would otherwise pass unseen).
        with trio.fail_after(1200):
            while not await all_final(requester, ids):
                with trio.move_on_after(30):  # the manager may be replaced by a restart
                    await requester.jobs.wait_for_change()
        nursery.cancel_scope.cancel()
    await check_outcomes(requester, ids)
    for node in [requester, *workers]:
        await node.db.close()


async def all_final(requester: SimNode, ids: list[bytes]) -> bool:
    for job_id in ids:
        row = await requester.store.job(job_id)
        if row is None or row["state"] not in FINAL:
            return False
    return True


async def check_outcomes(requester: SimNode, ids: list[bytes]) -> None:
    store, verified, failovers = requester.store, 0, 0
    for job_id in ids:
        job = await store.job(job_id)
        assert job is not None
        assert job["state"] in ("verified", "failed"), job["state"]
        if job["state"] == "failed":
            assert job["reason"], "a failed job says why"
        for task in await store.tasks(job_id):
            attempts = [a for a in await store.attempts(job_id) if a["idx"] == task.idx]
            done = [a for a in attempts if a["outcome"] == "done"]
            assert len(done) <= 1, "a task was done twice"
            if task.state == "verified":
                verified += 1
                assert len(done) == 1
                assert task.result_hash == final_state(SEGMENTS), "resumed to the wrong state"
            failovers += sum(1 for a in attempts if a["outcome"] not in ("done", ""))
            checkpoints = await store.checkpoints(job_id)
            for a in attempts:
                vouched, payable = int(a["vouched_wei"]), int(a["payable_wei"] or 0)
                assert payable <= vouched <= 10**15
                if a["outcome"] not in ("done", ""):  # failed over: paid up to a checkpoint
                    held = [c["seconds"] for c in checkpoints if c["held"] and
                            (c["idx"], c["attempt"]) == (a["idx"], a["attempt"])]  # fmt: skip
                    assert payable <= int(a["price_wei"]) * max(held, default=0)
    assert verified > 0.9 * JOBS, f"only {verified} tasks verified"
    assert failovers > 0, "the chaos never caused a failover: the test proves nothing"
