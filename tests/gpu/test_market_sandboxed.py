"""An exec job through the market runs in the worker's sandbox: it cannot read the worker's key.

Real job manager and worker service, real sqlite, real bubblewrap; in-memory network, real clock.
"""

from __future__ import annotations

from pathlib import Path

import trio

from consensus.market.bidder import Bidder, Capabilities, Policy
from consensus.market.spec import parse_spec
from gpu.exec_runtime import ExecRuntime
from gpu.runtime import tree_hash
from gpu.runtimes import Runtimes
from node.market.requester import JobManager
from node.market.worker import WorkerService
from tests.gpu.conftest import SECRET, needs_bwrap, sandbox
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, make_node, pool_entry

PROBE = """
import os, sys
key = sys.argv[1]
try:
    open(key, "rb").read()
except OSError as exc:
    os.makedirs("out", exist_ok=True)
    open("out/verdict.txt", "w").write("key unreadable\\n")
    sys.exit(0)
sys.exit("read the node key")
"""


@needs_bwrap
async def test_exec_job_runs_sandboxed_away_from_the_node_key(tmp_path: Path) -> None:
    hub = Hub()
    requester = await make_node(hub, tmp_path / "requester", "requester")
    worker = await make_node(hub, tmp_path / "worker", "worker")
    key = worker.root / "keys" / "node.key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(SECRET)
    key.chmod(0o600)
    hub.pool = [pool_entry(worker, 100)]
    (tmp_path / "probe.py").write_text(PROBE)
    spec = parse_spec({
        "kind": "exec", "verification": "none",
        "runtime": {"command": ["python3", "probe.py", str(key)], "estimate_s": 5},
        "io": {"inputs": ["probe.py"], "outputs": ["out/"]},
        "budget": {"max_total": 10**15, "max_price_per_s": 200, "deadline": "10m"},
    })  # fmt: skip
    bidder = Bidder(Capabilities(gpu_class="cpu", gpus=1), Policy(price_wei_per_s=100))
    worker.worker = WorkerService(
        worker.net, worker.store, worker.share, bidder=bidder,
        executor=Runtimes([ExecRuntime(sandbox())], []), work_root=worker.root / "work",
        params=PARAMS,
    )  # fmt: skip
    jobs = JobManager(requester.net, requester.store, requester.share, tmp_path / "s", PARAMS)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.worker.run)
            await nursery.start(jobs.run)
            job_id = await jobs.submit(spec, tmp_path)
            while (row := await requester.store.job(job_id))["state"] not in ("verified", "failed"):
                await jobs.wait_for_change()
            nursery.cancel_scope.cancel()
    assert row["state"] == "verified", row["reason"]
    [task] = await requester.store.tasks(job_id)
    expected = tmp_path / "expected"
    (expected / "out").mkdir(parents=True)
    (expected / "out" / "verdict.txt").write_text("key unreadable\n")
    assert task.result_hash == tree_hash(expected, ["out/"])
    for node in (requester, worker):
        await node.db.close()
