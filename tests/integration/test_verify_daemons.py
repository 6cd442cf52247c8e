"""Proof-of-compute on real daemons: a worker that fakes its task is caught by a sentry over
gossip, is not paid, loses reputation, and the task completes on an honest worker.

Four daemons on 127.0.0.1: a requester, a sentry, a cheap cheating worker (its executor is
wrapped by ``tests/integration/cheating_executor.py`` through ``worker.executor_wrapper``) and
a dearer honest one. The sentry re-runs the exec task in its own sandbox and compares output
tree hashes. Synchronised on what the daemons log, never on sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, all_output, cli_env, idlegrid, peer_id
from tests.integration.test_market_daemons import field

ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_MARKET_BID_WINDOW_MS="1000",
    IDLEGRID_MARKET_VOUCHER_INTERVAL_MS="500",
    IDLEGRID_VERIFY_COMMIT_WINDOW_MS="300",
    IDLEGRID_VERIFY_REVEAL_WINDOW_MS="300",
    IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS="60000",
)
WORKERS = {  # name: (price in gwei, extra environment)
    "w-cheat": (100, {"IDLEGRID_WORKER_EXECUTOR_WRAPPER": "tests.integration.cheating_executor"}),
    "w-honest": (200, {}),
}
JOB = """
name = "answer"
kind = "exec"
verification = "standard"

[runtime]
command = ["python3", "work.py"]
estimate_s = 2

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"
deadline = "5m"
"""
WORK = """
import pathlib, time
time.sleep(2)  # a few vouchers' worth
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/answer.txt").write_text(str(sum(range(1000))) + "\\n")
print("computed", flush=True)
"""


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict[str, Daemon]]:
    daemons: dict[str, Daemon] = {}
    try:
        home = tmp_path / "requester"
        assert idlegrid(home, "init", env=ENV).returncode == 0
        daemons["requester"] = Daemon(home, (), ENV).wait_started()
        status = json.loads(idlegrid(home, "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        assert idlegrid(tmp_path / "sentry", "init", "--role", "sentry", env=ENV).returncode == 0
        daemons["sentry"] = Daemon(tmp_path / "sentry", boot, ENV).wait_started()
        for name, (gwei, extra) in WORKERS.items():
            env = ENV | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": str(gwei * 10**9)} | extra
            assert idlegrid(tmp_path / name, "init", "--role", "worker", env=env).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, env).wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


def wait_all(daemon: Daemon, wanted: list[tuple[str, ...]], timeout: float = 60) -> None:
    """Reads ``daemon``'s lines until, for each entry, one line contains all of its parts."""
    left = list(wanted)
    while left:
        line = daemon.wait_for("", timeout)
        left = [w for w in left if not all(part in line for part in w)]


def test_a_faking_worker_is_caught_unpaid_and_the_task_reruns_honestly(
    network: dict[str, Daemon], tmp_path: Path
) -> None:
    requester, sentry = network["requester"], network["sentry"]
    ids = {name: peer_id(d.home) for name, d in network.items()}
    wait_all(requester, [("worker status", ids[w], "new=available") for w in WORKERS]
             + [("peer discovered", ids["sentry"])])  # fmt: skip
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "job.toml").write_text(JOB)
    (spec_dir / "work.py").write_text(WORK)
    done = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]

    first = requester.wait_for("task awarded")
    assert field(first, "worker") == ids["w-cheat"], "the cheapest worker wins first"
    caught = sentry.wait_for("verdict", timeout=90)
    assert f"worker={ids['w-cheat']}" in caught and "passed=False" in caught, caught
    rejected = requester.wait_for("verification", timeout=90)
    assert "outcome=rejected" in rejected, rejected
    again = requester.wait_for("task awarded", timeout=90)
    assert field(again, "worker") == ids["w-honest"], "the cheater is not asked again"
    passed = sentry.wait_for("verdict", timeout=90)
    assert f"worker={ids['w-honest']}" in passed and "passed=True" in passed, passed
    wait_all(requester, [("task moved", "job_state=verified")], timeout=90)

    view = json.loads(idlegrid(requester.home, "job", "status", job_id, "--json", env=ENV).stdout)
    assert view["state"] == "verified"
    cheat, honest = view["attempts"]
    assert (cheat["worker"], honest["worker"]) == (ids["w-cheat"], ids["w-honest"])
    assert int(cheat["vouched_wei"]) > 0, "it was promised money while it ran"
    assert cheat["payable_wei"] == "0" and cheat["outcome"].startswith("failed verification")
    assert int(honest["payable_wei"]) > 0
    checked = view["verification"]
    assert [v["passed"] for v in checked["verdicts"]] == [False, True]
    assert checked["reputation"][ids["w-cheat"]] < 500_000 < checked["reputation"][ids["w-honest"]]
    assert checked["guarantee"].startswith("exec: 1 of 1 segments re-executed")
    out = tmp_path / "out"
    fetched = idlegrid(requester.home, "job", "fetch", job_id, "--out", str(out), env=ENV)
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "out" / "answer.txt").read_text() == "499500\n"
    for daemon in network.values():
        assert "Traceback" not in daemon.output()


@pytest.fixture
def cross_class(tmp_path: Path) -> Iterator[dict[str, Daemon]]:
    """A requester, a faking worker and one sentry whose determinism class differs from the
    worker's (``verify.det_class``, the tests' seam): no sentry of the worker's class exists."""
    env = ENV | {"IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS": str(CROSS_TIMEOUT_MS)}
    daemons: dict[str, Daemon] = {}
    try:
        assert idlegrid(tmp_path / "requester", "init", env=env).returncode == 0
        daemons["requester"] = Daemon(tmp_path / "requester", (), env).wait_started()
        status = json.loads(idlegrid(tmp_path / "requester", "status", "--json", env=env).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        for name, role, extra in (
            ("sentry", "sentry", {"IDLEGRID_VERIFY_DET_CLASS": "another-device|py3|libs"}),
            ("w-cheat", "worker", WORKERS["w-cheat"][1] | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": "1"}),
        ):
            assert idlegrid(tmp_path / name, "init", "--role", role, env=env).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, env | extra).wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


# The sentry escalates in about 2 s (commit, reveal, an exec replay); the worker repeats its
# attestation only this long, so it leaves room for a loaded machine.
CROSS_TIMEOUT_MS = 15_000


def test_a_cross_class_miss_without_a_same_class_sentry_is_accepted_saying_why(
    cross_class: dict[str, Daemon], tmp_path: Path
) -> None:
    requester, sentry = cross_class["requester"], cross_class["sentry"]
    ids = {name: peer_id(d.home) for name, d in cross_class.items()}
    wait_all(requester, [("worker status", ids["w-cheat"], "new=available"),
                         ("peer discovered", ids["sentry"])])  # fmt: skip
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "job.toml").write_text(JOB)
    (spec_dir / "work.py").write_text(WORK.replace("time.sleep(2)", "pass"))  # a quick replay
    done = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]

    try:
        escalated = sentry.wait_for("escalated", timeout=90)
    except AssertionError as exc:  # say what the others did: the sentry alone says too little
        raise AssertionError(f"{exc}\n{all_output(cross_class)}") from None
    assert f"worker={ids['w-cheat']}" in escalated, escalated
    accepted = requester.wait_for("verification", timeout=60)
    assert "outcome=accepted" in accepted and "cross-class miss" in accepted, accepted
    wait_all(requester, [("task moved", "job_state=verified")], timeout=30)
    assert "node.verify.sentry: verdict " not in sentry.output(), "no verdict of its own"

    shown = idlegrid(requester.home, "job", "status", job_id, env=ENV)
    assert "cross-class miss, no same-class sentry" in shown.stdout, shown.stdout
    assert f"ESCALATED {ids['w-cheat'][-12:]}" in shown.stdout, shown.stdout
    view = json.loads(idlegrid(requester.home, "job", "status", job_id, "--json", env=ENV).stdout)
    [attempt] = view["attempts"]
    assert attempt["outcome"].startswith("cross-class miss, no same-class sentry")
    assert view["verification"]["verdicts"] == []
    assert view["verification"]["reputation"][ids["w-cheat"]] == 500_000, "no fail counted"
    for daemon in cross_class.values():
        assert "Traceback" not in daemon.output()
