"""A worker's disk has room for one dataset: its second job, on another dataset, makes room by
deleting the first (fetched for the earlier task, no longer used), and runs.

Two daemons on 127.0.0.1 (requester, worker). The worker's reserve is set from the disk's
free space so that about 100 MB are left to tasks: a 40 MB dataset takes 80 MB (its chunks,
and the copy written out once that its tasks link to) until it is deleted, so the second one
fits only once the first is gone. Synchronised on what the daemons log and on CLI exits,
never on sleeps. Another program writing hundreds of MB to the same disk meanwhile (a pip
install beside the test run) leaves the worker no room, and the test waits for it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.daemons import Daemon, idlegrid, peer_id
from tests.integration.test_market_daemons import field
from tests.integration.test_verify_daemons import ENV, wait_all

# alone: other tests writing or deleting files change the free space it is set from
pytestmark = [pytest.mark.slow, pytest.mark.alone]

SIZE = 40_000_000  # each dataset
ROOM = 100_000_000  # the worker's disk beyond its reserve
JOB = """
name = "size"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "-c", "import os; open('out.txt', 'w').write(str(os.path.getsize('d/blob')))"]
estimate_s = 2

[io]
outputs = ["out.txt"]
datasets = {{ d = "{dataset}" }}

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"
deadline = "5m"
"""


def add_dataset(requester: Daemon, root: Path) -> str:
    root.mkdir()
    (root / "blob").write_bytes(os.urandom(SIZE))
    added = idlegrid(requester.home, "data", "add", str(root), "--json", env=ENV)
    assert added.returncode == 0, added.stderr
    return str(json.loads(added.stdout)["dataset_id"])


def run_job(requester: Daemon, spec: Path, dataset: str) -> None:
    spec.write_text(JOB.format(dataset=dataset))
    done = idlegrid(requester.home, "job", "submit", str(spec), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    wait_all(requester, [("task moved", "job_state=verified")], timeout=120)


def test_a_worker_short_of_disk_deletes_an_idle_dataset_for_the_next_job(tmp_path: Path) -> None:
    daemons: list[Daemon] = []
    try:
        assert idlegrid(tmp_path / "requester", "init", env=ENV).returncode == 0
        requester = Daemon(tmp_path / "requester", (), ENV).wait_started()
        daemons.append(requester)
        first, second = (add_dataset(requester, tmp_path / name) for name in ("a", "b"))
        status = json.loads(idlegrid(requester.home, "status", "--json", env=ENV).stdout)
        reserve_mb = (shutil.disk_usage(tmp_path).free - ROOM) >> 20  # MiB, as every _mb setting
        env = ENV | {
            "IDLEGRID_WORKER_PRICE_WEI_PER_S": str(100 * 10**9),
            "IDLEGRID_WORKER_DISK_RESERVE_MB": str(reserve_mb),
            "IDLEGRID_WORKER_DATASET_KEEP_S": "0",
            "IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS": "1000",  # so a dataset is kept 1 s
            "IDLEGRID_VERIFY_BISECT_TIMEOUT_MS": "0",
        }
        assert idlegrid(tmp_path / "worker", "init", "--role", "worker", env=env).returncode == 0
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        worker = Daemon(tmp_path / "worker", boot, env).wait_started()
        daemons.append(worker)
        wait_all(requester, [("worker status", peer_id(worker.home), "new=available")])

        run_job(requester, tmp_path / "first.toml", first)
        assert field(worker.wait_for("dataset placed", timeout=60), "dataset") == first[:16]
        run_job(requester, tmp_path / "second.toml", second)
        evicted = worker.wait_for("dataset evicted", timeout=60)
        assert field(evicted, "dataset") == first[:16]
        assert int(field(evicted, "bytes_freed")) >= SIZE
        assert field(worker.wait_for("dataset placed", timeout=60), "dataset") == second[:16]
        shown = json.loads(idlegrid(worker.home, "worker", "--json", env=env).stdout)
        assert shown["disk"]["cached_datasets"] == 1  # the second, kept for the next task
        assert shown["disk"]["cached_bytes"] >= SIZE
        text = idlegrid(worker.home, "worker", env=env).stdout
        assert "1 dataset(s) kept from earlier tasks" in text, text
        gone = idlegrid(worker.home, "data", "rm", first, env=env)
        assert gone.returncode == 2 and f"no dataset {first[:16]} here" in gone.stderr, gone.stderr
        for daemon in daemons:
            assert "Traceback" not in daemon.output()
    finally:
        for daemon in daemons:
            daemon.kill()
