"""A train task moved to another worker mid-run resumes from a checkpoint and ends in the
state an uninterrupted run reaches: the failover the proof-of-compute issue builds on.

Two workers with the real train runtime in the real sandbox; the cheaper one is killed (as a
kill -9 would: off the network, its work cancelled) once the requester holds a checkpoint of it.
In-memory network, real clock, real sqlite.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus.market.bidder import Bidder, Capabilities, Policy
from consensus.market.spec import parse_spec
from gpu.runtime import RunSpec, SegmentDone
from gpu.runtimes import Runtimes
from gpu.train import TrainRuntime
from node.market.requester import JobManager
from node.market.tasks import workload_for
from node.market.worker import WorkerService
from tests.gpu.conftest import needs_bwrap, sandbox
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, SimNode, make_node, pool_entry

pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytestmark = needs_bwrap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
SLOW_STEP = """
import time
_step = step

def step(ctx, *args):
    time.sleep(0.3)  # slow enough for the test to kill the worker mid-run
    return _step(ctx, *args)
"""
DOC = {"kind": "train", "verification": "none",
       "io": {"inputs": ["train.py"], "outputs": ["model.ckpt"]},
       "runtime": {"entry": "train.py", "steps": 8, "segments": 4, "seed": 5, "estimate_s": 5,
                   "params": {"hidden": "8"}},
       "budget": {"max_total": 10**15, "max_price_per_s": 300, "deadline": "10m"}}  # fmt: skip


def service(node: SimNode, price: int) -> WorkerService:
    bidder = Bidder(Capabilities(gpu_class="cpu", gpus=1), Policy(price_wei_per_s=price))
    return WorkerService(node.net, node.store, node.share, bidder=bidder,
                         executor=Runtimes([TrainRuntime(sandbox())], []),
                         work_root=node.root / "work", params=PARAMS)  # fmt: skip


async def baseline_hashes(tmp_path: Path) -> list[bytes]:
    workdir = tmp_path / "baseline"
    workdir.mkdir()
    shutil.copy(tmp_path / "train.py", workdir)
    hashes: list[bytes] = []

    async def keep(done: SegmentDone) -> None:
        hashes.append(done.hash)

    workload = workload_for(parse_spec(DOC), 0)
    result = await TrainRuntime(sandbox()).run(RunSpec("b", workload, workdir), keep, print)
    assert result.ok, result.error
    return hashes


async def run_worker(node: SimNode, price: int) -> None:
    with node.scope:
        await service(node, price).run()


async def test_a_killed_workers_task_resumes_elsewhere_to_the_same_state(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(EXAMPLE.read_text() + SLOW_STEP)
    expected = await baseline_hashes(tmp_path)
    hub = Hub()
    requester = await make_node(hub, tmp_path / "requester", "requester")
    cheap = await make_node(hub, tmp_path / "cheap", "cheap")
    dear = await make_node(hub, tmp_path / "dear", "dear")
    hub.pool = [pool_entry(cheap, 100), pool_entry(dear, 200)]
    jobs = JobManager(requester.net, requester.store, requester.share, tmp_path / "s", PARAMS)
    held = trio.Event()
    add_checkpoint = requester.store.add_checkpoint

    async def noting(ref: Any, segment: int, **row: Any) -> None:
        await add_checkpoint(ref, segment, **row)
        if row["held"] and segment >= 1:
            held.set()

    requester.store.add_checkpoint = noting  # type: ignore[method-assign]

    async def kill_cheap_once_held() -> None:
        await held.wait()
        hub.kill(cheap.net.peer_id)  # as kill -9: gone from the network, its work cancelled
        cheap.scope.cancel()

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_worker, cheap, 100)
            nursery.start_soon(run_worker, dear, 200)
            nursery.start_soon(kill_cheap_once_held)
            await nursery.start(jobs.run)
            job_id = await jobs.submit(parse_spec(DOC), tmp_path)
            while (row := await requester.store.job(job_id))["state"] not in ("verified", "failed"):
                await jobs.wait_for_change()
            nursery.cancel_scope.cancel()
    assert row["state"] == "verified", row["reason"]
    rows = await requester.store.checkpoints(job_id)
    attempts = sorted({r["attempt"] for r in rows})
    assert len(attempts) == 2, "the task did not move to the second worker"
    second = [r for r in rows if r["attempt"] == attempts[1]]
    assert second[0]["segment"] > 0, "the second worker started over instead of resuming"
    for r in rows:
        assert r["hash"] == expected[r["segment"]], f"segment {r['segment']} of {r['attempt']}"
    [task] = await requester.store.tasks(job_id)
    assert task.result_hash == expected[-1]
    for node in (requester, cheap, dear):
        await node.db.close()
