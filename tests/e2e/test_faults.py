"""Faults on a whole localnet (five daemons, one chain, settlement on): the job completes and
the money adds up afterwards.

Synchronised by polling the daemons' APIs within deadlines, never by sleeping a fixed time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from node.client import ApiClient
from node.home import Home, HomeError
from node.localnet import net, nodes
from node.localnet.procs import stop_all
from node.localnet.state import NodeInfo, State

T = TypeVar("T")
BPS, FEE_BPS = 10_000, 100  # the localnet's contract takes 1 % of each epoch's earnings

SLOW_JOB = """
name = "slow"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "slow.py"]
estimate_s = 12

[io]
inputs = ["slow.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "1000 gwei"
deadline = "5m"
"""

SLOW = """
import pathlib, time
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
for i in range(24):
    time.sleep(0.5)
    print("tick", i, flush=True)
(out / "done.txt").write_text("ok\\n")
"""


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[State]:
    state = net.start(tmp_path / "ln", requesters=1, workers=2, sentries=1, chain_mode="auto")
    try:
        yield state
    finally:
        stop_all(state.procs())


def api(node: NodeInfo) -> ApiClient:
    return ApiClient(Home(Path(node.home)), timeout_s=5.0)


def poll(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """The first non-None ``probe()``; a daemon still restarting counts as not yet."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except HomeError as exc:
            last = exc
        else:
            if last is not None:
                return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def test_requester_killed_mid_job_restarts_and_the_job_completes_and_settles(
    localnet: State, tmp_path: Path
) -> None:
    requester = localnet.node("requester-1")
    workers = [n for n in localnet.nodes if n.role == "worker"]
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "slow.py").write_text(SLOW)
    body = {"spec": SLOW_JOB, "base_dir": str(job_dir)}
    job_id = api(requester).post("/v1/jobs", body)["job_id"]

    def running() -> bool | None:
        view = api(requester).get(f"/v1/job?id={job_id}")
        return True if view["task_states"][0]["state"] == "running" else None

    poll("task running", running, 60)
    os.kill(requester.proc.pid, signal.SIGKILL)  # mid-task, vouchers flowing
    poll("requester gone", lambda: True if not requester.proc.alive() else None, 10)
    nodes.start_daemon(requester)
    nodes.wait_ready(requester)

    def final() -> dict[str, Any] | None:
        view: dict[str, Any] = api(requester).get(f"/v1/job?id={job_id}")
        return view if view["state"] in ("verified", "failed", "cancelled") else None

    view = poll("job final after the restart", final, 120)
    assert view["state"] == "verified", view["reason"]
    assert len(view["attempts"]) == 1, "the task was not run twice"
    worker = next(w for w in workers if w.peer_id == view["attempts"][0]["worker"])

    def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
        mine, theirs = api(requester).get("/v1/chain"), api(worker).get("/v1/chain")
        claim, vouched = theirs["payee"]["last_claim"], int(theirs["payee"]["vouched_wei"])
        escrow = mine["escrow"]["jobs"]
        # The last voucher comes with the final report, so it may be anchored an epoch later.
        paid_all = claim and int(claim["cumulative_wei"]) * BPS >= vouched * (BPS - FEE_BPS)
        if not paid_all or set(escrow) != {"returned"}:
            return None
        return mine, theirs

    mine, theirs = poll("escrow returned and the worker's claim", settled, 180)
    vouched = int(theirs["payee"]["vouched_wei"])
    paid = int(theirs["earned_wei"])
    funded = int(mine["escrow"]["jobs"]["returned"]["funded_wei"])
    returned = int(mine["escrow"]["jobs"]["returned"]["returned_wei"])
    assert vouched > 0
    assert paid * BPS >= vouched * (BPS - FEE_BPS), "the worker got its vouchers, less the fee"
    assert paid <= vouched, "never more than the requester signed"
    # A voucher signed and recorded just before the kill, but never delivered, stays in the
    # requester's pool (its own money, withdrawable), never with the worker: so >=, not ==.
    assert funded - returned >= vouched, "escrow kept what was vouched, returned the rest"
    assert funded - returned <= vouched + int(view["attempts"][0]["price_wei_per_s"]), (
        "at most one voucher interval (1 s at the worker's price) kept beyond the vouchers"
    )
