"""A requester and three workers as separate daemons on 127.0.0.1: the cheapest qualified
worker wins the task, and when it is killed (-9) mid-task the task completes on another.

Synchronised on what the daemons log ("worker status", "task awarded", "task moved"), never
on sleeps. The workload itself takes a few seconds so that there is a task to kill.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid, peer_id

PRICES = {"w-dear": 300, "w-cheap": 100, "w-mid": 200}  # gwei per second
ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_MARKET_BID_WINDOW_MS="1000",
    IDLEGRID_MARKET_VOUCHER_INTERVAL_MS="500",
    IDLEGRID_MARKET_LOST_AFTER_MS="3000",
)

JOB = """
name = "slow-count"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = 5

[requirements]
gpu_count = 1

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"   # w-dear asks more and does not qualify
deadline = "5m"
"""

WORK = """
import pathlib, sys, time
print("working", flush=True)
time.sleep(4)  # long enough to be killed mid-task
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/answer.txt").write_text("42\\n")
print("done", flush=True)
"""


def wait_for_fields(daemon: Daemon, msg: str, timeout: float = 30, **fields: str) -> str:
    """The next line logging ``msg`` whose key=value fields include all of ``fields``."""
    wanted = [f"{k}={v}" for k, v in fields.items()]
    while True:
        line = daemon.wait_for(msg, timeout)
        if all(w in line.split() for w in wanted):
            return line


def field(line: str, key: str) -> str:
    return next(part.split("=", 1)[1] for part in line.split() if part.startswith(f"{key}="))


@pytest.fixture
def market(tmp_path: Path) -> Iterator[dict[str, Daemon]]:
    daemons: dict[str, Daemon] = {}
    try:
        home = tmp_path / "requester"
        assert idlegrid(home, "init", env=ENV).returncode == 0
        daemons["requester"] = Daemon(home, (), ENV).wait_started()
        status = json.loads(idlegrid(home, "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        for name, gwei in PRICES.items():
            env = ENV | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": str(gwei * 10**9)}
            assert idlegrid(tmp_path / name, "init", "--role", "worker", env=env).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, env).wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


def test_cheapest_worker_wins_and_a_killed_worker_fails_over(
    market: dict[str, Daemon], tmp_path: Path
) -> None:
    requester = market["requester"]
    ids = {name: peer_id(d.home) for name, d in market.items()}
    for name in PRICES:
        wait_for_fields(requester, "worker status", peer=ids[name], new="available")
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "job.toml").write_text(JOB)
    (spec_dir / "work.py").write_text(WORK)
    submitted = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json",
                         env=ENV)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]

    awarded = requester.wait_for("task awarded")
    assert field(awarded, "worker") == ids["w-cheap"], "the cheapest qualified worker wins"
    wait_for_fields(requester, "task moved", state="running")
    market["w-cheap"].proc.send_signal(signal.SIGKILL)
    market["w-cheap"].proc.wait(timeout=10)

    requester.wait_for("worker lost, failing over", timeout=30)
    again = requester.wait_for("task awarded", timeout=60)
    assert field(again, "worker") == ids["w-mid"], "w-dear asks more than the job allows"
    wait_for_fields(requester, "task moved", timeout=60, job_state="verified")

    status = json.loads(idlegrid(requester.home, "job", "status", job_id, "--json", env=ENV).stdout)
    assert status["state"] == "verified"
    attempts = status["attempts"]
    assert [a["worker"] for a in attempts] == [ids["w-cheap"], ids["w-mid"]]
    assert attempts[0]["outcome"].startswith("unreachable"), attempts[0]
    assert int(attempts[0]["payable_wei"]) <= int(attempts[0]["vouched_wei"])
    out = tmp_path / "out"
    fetched = idlegrid(requester.home, "job", "fetch", job_id, "--out", str(out), env=ENV)
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "out" / "answer.txt").read_text() == "42\n"
    check_views(market, ids, job_id)
    check_no_bids_then_cancel(requester, spec_dir)
    check_stale_folder_deleted(market, job_id)
    for daemon in market.values():
        assert "Traceback" not in daemon.output()


def check_stale_folder_deleted(market: dict[str, Daemon], job_id: str) -> None:
    """The killed worker's task folder outlived it; its next start deletes it."""
    killed = market["w-cheap"]
    mine = lambda: [p for p in (killed.home / "work").iterdir() if p.name.startswith(job_id)]  # noqa: E731
    assert mine(), "the kill left the task's folder"
    market["w-cheap"] = again = Daemon(killed.home, killed.args, killed.env)
    assert int(field(again.wait_for("stale task folders deleted"), "folders")) >= 1
    again.wait_started()
    assert mine() == []


def cli_json(daemon: Daemon, *args: str) -> dict:
    done = idlegrid(daemon.home, *args, "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def check_views(market: dict[str, Daemon], ids: dict[str, str], job_id: str) -> None:
    """bids, job logs, job list and worker show what happened, to a person and to scripts."""
    requester = market["requester"]
    bids = cli_json(requester, "bids", job_id[:8])["bids"]
    won = {b["worker"] for b in bids if b["outcome"] == "won"}
    assert won == {ids["w-cheap"], ids["w-mid"]}
    assert ids["w-dear"] not in {b["worker"] for b in bids}, "a worker above the cap bids not"
    logs = idlegrid(requester.home, "job", "logs", job_id, "--json", env=ENV).stdout
    lines = [json.loads(line)["line"] for line in logs.splitlines()]
    assert lines[0] == "working"
    assert lines[-1] == "done"
    listed = cli_json(requester, "job", "list")["jobs"]
    assert [j["job_id"] for j in listed] == [job_id]
    dear = cli_json(market["w-dear"], "worker")
    assert dear["status"] == "available"
    assert dear["paused"] == [], "nothing paused for want of payment"
    assert any("price" in d["decision"] for d in dear["decisions"]), dear["decisions"]


def check_no_bids_then_cancel(requester: Daemon, spec_dir: Path) -> None:
    """A job nobody can take says why, and cancelling it ends it."""
    (spec_dir / "big.toml").write_text(JOB.replace("gpu_count = 1", "vram_mb = 48000"))
    job_id = cli_json(requester, "job", "submit", str(spec_dir / "big.toml"))["job_id"]
    requester.wait_for("no award", timeout=30)
    reason = cli_json(requester, "job", "status", job_id)["task_states"][0]["reason"]
    assert reason.startswith("0 of "), reason
    assert "have vram_mb >= 48000" in reason, reason
    assert cli_json(requester, "job", "cancel", job_id)["cancelled"] == 1
    assert cli_json(requester, "job", "status", job_id)["state"] == "cancelled"
    fetched = idlegrid(
        requester.home, "job", "fetch", job_id, "--out", str(spec_dir / "o"), env=ENV
    )
    assert fetched.returncode == 1 and "will have none: cancelled" in fetched.stderr, fetched.stderr
