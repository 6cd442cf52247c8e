"""Jobs through the market run in the worker's real runtimes and sandbox.

Real job manager and worker service, real sqlite, real bubblewrap and PyTorch; in-memory
network, real clock.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from blake3 import blake3

from consensus.market.bidder import Bidder, Capabilities, Policy
from consensus.market.spec import parse_spec
from gpu.exec_runtime import ExecRuntime
from gpu.render import RenderRuntime
from gpu.runtime import GENESIS, chain, tree_hash
from gpu.runtimes import Runtimes
from gpu.train import TrainRuntime
from node.market.requester import JobManager
from node.market.worker import WorkerService
from tests.gpu.conftest import SECRET, needs_bpy, needs_bwrap, sandbox
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, SimNode, make_node, pool_entry

pytestmark = needs_bwrap
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
BUDGET = {"max_total": 10**15, "max_price_per_s": 200, "deadline": "10m"}
PROBE = """
import os, sys
try:
    open(sys.argv[1], "rb").read()
except OSError as exc:
    os.makedirs("out", exist_ok=True)
    open("out/verdict.txt", "w").write("key unreadable\\n")
    sys.exit(0)
sys.exit("read the node key")
"""


async def run_job(tmp_path: Path, doc: dict[str, Any]) -> tuple[SimNode, bytes]:
    """Runs one job between a requester and one worker; returns the requester and the job id."""
    hub = Hub()
    requester = await make_node(hub, tmp_path / "requester", "requester")
    worker = await make_node(hub, tmp_path / "worker", "worker")
    key = worker.root / "keys" / "node.key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(SECRET)
    key.chmod(0o600)
    hub.pool = [pool_entry(worker, 100)]
    box = sandbox()
    bidder = Bidder(Capabilities(gpu_class="cpu", gpus=1), Policy(price_wei_per_s=100))
    service = WorkerService(
        worker.net, worker.store, worker.share, bidder=bidder,
        executor=Runtimes([ExecRuntime(box), TrainRuntime(box), RenderRuntime(box)], []),
        work_root=worker.root / "work", params=PARAMS,
    )  # fmt: skip
    jobs = JobManager(requester.net, requester.store, requester.share, tmp_path / "s", PARAMS)
    doc = {**doc, "budget": BUDGET, "verification": "none"}
    doc["runtime"] = {k: str(key) if v == "KEY" else v for k, v in doc["runtime"].items()}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await nursery.start(jobs.run)
            job_id = await jobs.submit(parse_spec(doc), tmp_path)
            while (row := await requester.store.job(job_id))["state"] not in ("verified", "failed"):
                await jobs.wait_for_change()
            nursery.cancel_scope.cancel()
    assert row["state"] == "verified", row["reason"]
    await worker.db.close()
    return requester, job_id


async def test_exec_job_runs_sandboxed_away_from_the_node_key(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    doc = {"kind": "exec", "io": {"inputs": ["probe.py"], "outputs": ["out/"]},
           "runtime": {"command": ["python3", "probe.py", "KEY"], "estimate_s": 5}}  # fmt: skip
    requester, job_id = await run_job(tmp_path, doc)
    [task] = await requester.store.tasks(job_id)
    expected = tmp_path / "expected"
    (expected / "out").mkdir(parents=True)
    (expected / "out" / "verdict.txt").write_text("key unreadable\n")
    assert task.result_hash == tree_hash(expected, ["out/"])
    await requester.db.close()


async def test_train_job_through_the_market_returns_a_chain_of_checkpoints(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
    shutil.copy(EXAMPLE, tmp_path / "train.py")
    doc = {"kind": "train", "io": {"inputs": ["train.py"], "outputs": ["model.ckpt"]},
           "runtime": {"entry": "train.py", "steps": 8, "segments": 4, "seed": 3,
                       "estimate_s": 5, "params": {"hidden": "8"}}}  # fmt: skip
    requester, job_id = await run_job(tmp_path, doc)
    [task] = await requester.store.tasks(job_id)
    rows = await requester.store.checkpoints(job_id)
    assert [r["segment"] for r in rows] == [0, 1, 2, 3]
    chained = GENESIS
    for row in rows:
        chained = chain(chained, row["hash"])
        assert row["chained"] == chained
        if row["held"]:  # the requester keeps checkpoints for failover: their bytes hash right
            held = requester.share.store.path(row["hash"].hex())
            assert blake3(held.read_bytes()).digest() == row["hash"]
    assert task.result_hash == rows[-1]["hash"]
    assert any(r["held"] for r in rows), "the requester fetched no checkpoint"
    await requester.db.close()


@needs_bpy
async def test_render_job_through_the_market_returns_its_tiles(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE.parents[1] / "render-scene" / "scene.py", tmp_path / "scene.py")
    doc = {"kind": "render", "io": {"inputs": ["scene.py"], "outputs": ["out/"]},
           "runtime": {"entry": "scene.py", "frames": "2", "seed": 1, "estimate_s": 5,
                       "params": {"samples": "4", "tiles": "2x1"}}}  # fmt: skip
    requester, job_id = await run_job(tmp_path, doc)
    [task] = await requester.store.tasks(job_id)
    rows = await requester.store.checkpoints(job_id)
    assert [r["segment"] for r in rows] == [0, 1]
    assert task.result_hash == rows[-1]["hash"]
    await requester.db.close()
