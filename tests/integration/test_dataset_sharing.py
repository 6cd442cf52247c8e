"""A job's dataset reaches its second worker from the requester and from the job's first
worker at once: the requester asks the first to serve it and names it in the order.

Three daemons on 127.0.0.1 (requester, two workers, the second started once the first has
placed the dataset, so that it takes the job's other task). Synchronised on what the daemons
log and on CLI exits, never on sleeps (the workload sleeps, to stay running meanwhile).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemons import Daemon, idlegrid, peer_id
from tests.integration.test_market_daemons import field
from tests.integration.test_transfer import make_tree
from tests.integration.test_verify_daemons import ENV, wait_all

pytestmark = pytest.mark.slow

JOB = """
name = "shared"
kind = "exec"
tasks = 2
split = "shards"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = 2

[io]
inputs = ["work.py"]
outputs = ["out/"]
datasets = {{ corpus = "{dataset}" }}

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"
deadline = "5m"
"""
WORK = """
import pathlib, time
size = sum(p.stat().st_size for p in pathlib.Path("corpus").rglob("*") if p.is_file())
time.sleep(8)  # the first worker's task still runs when the second worker comes
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/size.txt").write_text(str(size))
"""


def test_the_jobs_first_worker_serves_its_dataset_to_the_second(tmp_path: Path) -> None:
    daemons: dict[str, Daemon] = {}
    env = ENV | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": str(100 * 10**9)}
    try:
        assert idlegrid(tmp_path / "requester", "init", env=ENV).returncode == 0
        requester = daemons["requester"] = Daemon(tmp_path / "requester", (), ENV).wait_started()
        addr = json.loads(idlegrid(requester.home, "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(addr["p2p"]["addrs"][0]))
        for name in ("w1", "w2"):
            assert idlegrid(tmp_path / name, "init", "--role", "worker", env=env).returncode == 0
        first = daemons["w1"] = Daemon(tmp_path / "w1", boot, env).wait_started()
        ids = {"w1": peer_id(first.home), "w2": peer_id(tmp_path / "w2")}
        wait_all(requester, [("worker status", ids["w1"], "new=available")])
        corpus = tmp_path / "corpus"
        make_tree(corpus, big_files=8, small_files=20)
        added = idlegrid(requester.home, "data", "add", str(corpus), "--json", env=ENV)
        assert added.returncode == 0, added.stderr
        dataset = json.loads(added.stdout)["dataset_id"]
        (tmp_path / "job").mkdir()
        (tmp_path / "job" / "work.py").write_text(WORK)
        (tmp_path / "job" / "job.toml").write_text(JOB.format(dataset=dataset))
        job = tmp_path / "job" / "job.toml"
        submitted = idlegrid(requester.home, "job", "submit", str(job), "--json", env=ENV)
        assert submitted.returncode == 0, submitted.stderr
        first.wait_for("dataset placed", timeout=60)  # its task runs 8 s from here

        second = daemons["w2"] = Daemon(tmp_path / "w2", boot, env).wait_started()
        shared = first.wait_for("task data shared", timeout=60)
        assert field(shared, "to") == ids["w2"] and field(shared, "requester") == peer_id(
            requester.home
        )
        placed = second.wait_for("dataset placed", timeout=60)
        assert int(field(placed, "chunks_moved")) > 0
        wait_all(requester, [("task moved", "job_state=verified")], timeout=90)
        got = idlegrid(second.home, "data", "status", dataset, "--json", env=ENV)
        (row,) = json.loads(got.stdout)
        assert ids["w1"] in row["sources"], row["sources"]  # it fetched from the worker too
        assert sum(s["chunks"] for s in row["sources"].values()) == row["chunks_total"]
        for daemon in daemons.values():
            assert "Traceback" not in daemon.output()
    finally:
        for daemon in daemons.values():
            daemon.kill()
