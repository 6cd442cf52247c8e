"""Driving a whole localnet from a test: its APIs, polled within deadlines, never a fixed sleep."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from node.chain.backend import DeployParams
from node.client import ApiClient
from node.home import Home, HomeError
from node.localnet import nodes
from node.localnet.state import NodeInfo, State

T = TypeVar("T")
BPS, FEE_BPS = 10_000, DeployParams().fee_bps  # the localnet deploys with the defaults' fee
FINAL = ("verified", "failed", "cancelled")

# A small exec job whose answer anyone can check: 2 s of "work", one output file.
ANSWER_JOB = """
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
max_price_per_s = "1000 gwei"
deadline = "5m"
"""
ANSWER_WORK = """
import pathlib, time
time.sleep(2)
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/answer.txt").write_text(str(sum(range(1000))) + "\\n")
"""


def api(node: NodeInfo) -> ApiClient:
    return ApiClient(Home(Path(node.home)), timeout_s=5.0)


def poll(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """The first non-None ``probe()``; a daemon still restarting counts as not yet."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except HomeError as exc:
            last = exc
        else:
            if got is not None:
                return got
            last = got
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def submit(requester: NodeInfo, job_dir: Path, spec: str, files: dict[str, str]) -> str:
    """Writes ``files`` into ``job_dir`` and submits ``spec`` from there; the job id."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (job_dir / name).write_text(text)
    body = {"spec": spec, "base_dir": str(job_dir)}
    return str(api(requester).post("/v1/jobs", body)["job_id"])


def job_view(requester: NodeInfo, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = api(requester).get(f"/v1/job?id={job_id}")
    return view


def wait_final(requester: NodeInfo, job_id: str, timeout_s: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        view = job_view(requester, job_id)
        return view if view["state"] in FINAL else None

    return poll(f"job {job_id[:8]} final", final, timeout_s)


def kill9(node: NodeInfo) -> None:
    os.kill(node.proc.pid, signal.SIGKILL)
    poll(f"{node.name} gone", lambda: True if not node.proc.alive() else None, 10)


def restart(node: NodeInfo) -> None:
    nodes.start_daemon(node)
    nodes.wait_ready(node)


def paid_in_full(worker: NodeInfo) -> dict[str, Any] | None:
    """The worker's chain view once what it received (paid out or claimed) covers every
    voucher it holds, less the fee."""
    view: dict[str, Any] = api(worker).get("/v1/chain")
    earned, vouched = int(view["earned_wei"]), int(view["payee"]["vouched_wei"])
    if vouched and earned * BPS >= vouched * (BPS - FEE_BPS):
        return view
    return None


def escrow_returned(requester: NodeInfo) -> dict[str, Any] | None:
    """The requester's chain view once every job's escrow is settled and returned."""
    view: dict[str, Any] = api(requester).get("/v1/chain")
    jobs = view["escrow"]["jobs"]
    return view if jobs and set(jobs) == {"returned"} else None


def workers_of(state: State) -> list[NodeInfo]:
    return [n for n in state.nodes if n.role == "worker"]


def by_peer(state: State, peer_id: str) -> NodeInfo:
    return next(n for n in state.nodes if n.peer_id == peer_id)
