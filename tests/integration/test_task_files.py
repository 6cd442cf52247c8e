"""Task files expire on real daemons: after a job, with a short ``node.task_data_expire_s``,
the worker holds none of the job's files and the requester holds the result alone, which
``job fetch`` still reads.

Synchronised on what the daemons log ("task files expired ... left=N"), never on sleeps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.daemons import Daemon, cli_env, idlegrid, peer_id

ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_MARKET_BID_WINDOW_MS="500",
    IDLEGRID_NODE_TASK_DATA_EXPIRE_S="1",
    # Files stay at least this long after their last use: long enough for the requester to
    # fetch the result, which a worker that kept its files 1 s deleted first.
    IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS="10000",
    IDLEGRID_VERIFY_BISECT_TIMEOUT_MS="0",
)

JOB = """
name = "answer"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = 1

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "2000 gwei"  # a worker asks 1000 by default
deadline = "5m"
"""

WORK = """
import pathlib
pathlib.Path("out").mkdir()
pathlib.Path("out/answer.txt").write_text("42\\n")
"""


def logged(daemon: Daemon, msg: str, field: str, timeout: float = 30) -> None:
    """Returns once ``msg`` was logged with ``field`` (key=value) within ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    while field not in daemon.wait_for(msg, max(deadline - time.monotonic(), 0.01)).split():
        pass


def keys_held(home: Path) -> int:
    return len(list((home / "work" / "keys").iterdir()))


def test_the_worker_keeps_no_task_file_and_the_requester_keeps_the_result(
    tmp_path: Path,
) -> None:
    daemons = []
    try:
        requester_home, worker_home = tmp_path / "requester", tmp_path / "worker"
        assert idlegrid(requester_home, "init", env=ENV).returncode == 0
        requester = Daemon(requester_home, (), ENV).wait_started()
        daemons.append(requester)
        boot = json.loads(idlegrid(requester_home, "status", "--json", env=ENV).stdout)
        assert idlegrid(worker_home, "init", "--role", "worker", env=ENV).returncode == 0
        worker = Daemon(worker_home, ("--bootstrap", boot["p2p"]["addrs"][0]), ENV)
        daemons.append(worker.wait_started())
        requester.wait_for(f"peer={peer_id(worker_home)}", timeout=30)

        (tmp_path / "job.toml").write_text(JOB)
        (tmp_path / "work.py").write_text(WORK)
        submitted = idlegrid(requester_home, "job", "submit", str(tmp_path / "job.toml"),
                             "--json", env=ENV)  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["job_id"]
        logged(requester, "task moved", "job_state=verified", timeout=60)

        # inputs, checkpoint and result, once nobody needs them
        logged(worker, "task files expired", "left=0")
        assert keys_held(worker_home) == 0
        assert not [p for p in (worker_home / "blobs").rglob("*") if p.is_file()]
        # the inputs went; the result is the user's
        logged(requester, "task files expired", "left=1")
        assert keys_held(requester_home) == 1
        out = tmp_path / "out"
        fetched = idlegrid(requester_home, "job", "fetch", job_id, "--out", str(out), env=ENV)
        assert fetched.returncode == 0, fetched.stderr
        assert (out / "out" / "answer.txt").read_text() == "42\n"
        for daemon in daemons:
            assert "Traceback" not in daemon.output()
    finally:
        for daemon in daemons:
            daemon.kill()
