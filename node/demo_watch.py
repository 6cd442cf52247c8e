"""The demo's narrator: follows one job through a requester's local API and prints each step
(bids, award, transfer, running, checkpoints, attestation, verification) as it happens.

It reads only what an operator's script could read (``/v1/job`` and ``/v1/job/bids``), so the
demo shows the product's real state, not a story told beside it. Polling is fine here: a person
is watching, and half a second is faster than they read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.settlement.units import format_wei
from node.chain.backend import DeployParams
from node.client import ApiClient

POLL_S = 0.3
BPS = 10_000
FEE_BPS = DeployParams().fee_bps  # what the localnet deploys with
FINAL = frozenset({"verified", "settled", "failed", "cancelled"})

Names = Callable[[str], str]  # peer id -> a short name for the reader


@dataclass
class JobWatch:
    """What has been printed for one job already, so each step is told once."""

    api: ApiClient
    job_id: str
    names: Names
    bids: set[tuple[int, int, str]] = field(default_factory=set)
    task_states: dict[int, tuple[str, int, int, str]] = field(default_factory=dict)
    attempts: set[tuple[int, int]] = field(default_factory=set)
    verdicts: set[tuple[int, int, str]] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f}s]"

    def say(self, text: str) -> None:
        print(f"  {self.stamp()} {text}", flush=True)

    def poll(self) -> dict[str, Any]:
        view: dict[str, Any] = self.api.get(f"/v1/job?id={self.job_id}")
        for bid in self.api.get(f"/v1/job/bids?id={self.job_id}")["bids"]:
            self._bid(bid)
        for attempt in view["attempts"]:
            self._attempt(attempt)
        for task in view["task_states"]:
            self._task(task)
        for verdict in view.get("verification", {}).get("verdicts", []):
            self._verdict(verdict)
        return view

    def _verdict(self, v: dict[str, Any]) -> None:
        key = (v["task"], v["attempt"], v["sentry"])
        if key in self.verdicts:
            return
        self.verdicts.add(key)
        outcome = ("PASS" if v["passed"] else "FAIL") + (f" ({v['reason']})" if v["reason"] else "")
        self.say(
            f"verdict task {v['task']}: {self.names(v['sentry'])} challenged "
            f"{self.names(v['worker'])} and re-ran its sampled segments: {outcome}"
        )

    def _bid(self, bid: dict[str, Any]) -> None:
        key = (bid["task"], bid["attempt"], bid["worker"])
        if key in self.bids:
            return
        self.bids.add(key)
        price = format_wei(int(bid["price_wei_per_s"]), "gwei")
        self.say(
            f"bid   task {bid['task']}: {self.names(bid['worker'])} asks {price}/s "
            f"x {bid['gpus']} GPU, estimates {bid['est_s']} s"
        )

    def _attempt(self, attempt: dict[str, Any]) -> None:
        key = (attempt["task"], attempt["attempt"])
        if key in self.attempts:
            return
        self.attempts.add(key)
        price = format_wei(int(attempt["price_wei_per_s"]), "gwei")
        self.say(
            f"award task {attempt['task']} -> {self.names(attempt['worker'])} at {price}/s "
            f"(attempt {attempt['attempt']})"
        )

    def _task(self, task: dict[str, Any]) -> None:
        now = (task["state"], task["attempt"], task["checkpoints"], task.get("reason") or "")
        before = self.task_states.get(task["task"])
        if before == now:
            return
        self.task_states[task["task"]] = now
        if before is not None and before[2] != now[2]:
            self.say(f"task {task['task']}: {now[2]} checkpoint(s) hashed and chained")
        # A new reason in the same state is news too: a task auctioned again because every
        # worker passed says why (e.g. no worker offers its kind), instead of "bidding" alone.
        if before is None or before[0] != now[0] or before[3] != now[3]:
            why = f" ({now[3]})" if now[3] else ""
            self.say(f"task {task['task']}: {now[0]}{why}")


def follow(api: ApiClient, job_id: str, names: Names, timeout_s: float) -> dict[str, Any]:
    """Prints the job's steps until it is final; returns its last view.

    Raises:
        SystemExit: the job did not finish within ``timeout_s``.
    """
    watch = JobWatch(api, job_id, names)
    deadline = time.monotonic() + timeout_s
    while True:
        view = watch.poll()
        if view["state"] in FINAL:
            return view
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: job {job_id[:12]} still {view['state']} after {timeout_s} s")
        time.sleep(POLL_S)


def follow_settlement(apis: dict[str, ApiClient], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Prints anchors, finality, payouts and claims as the nodes report them, until every
    worker that holds vouchers has received all of it on chain; returns each node's last
    ``/v1/chain``.

    Raises:
        SystemExit: not settled within ``timeout_s`` (the last state is printed first).
    """
    started, seen = time.monotonic(), set[tuple[str, str]]()
    deadline = started + timeout_s
    while True:
        views = {name: api.get("/v1/chain") for name, api in apis.items()}
        for name, view in views.items():
            for event in _settlement_events(view):
                if (name, event) not in seen:
                    seen.add((name, event))
                    print(f"  [{time.monotonic() - started:6.1f}s] {name}: {event}", flush=True)
        if all(_paid(v) for v in views.values()):
            return views
        if time.monotonic() > deadline:
            for name, view in views.items():
                parts = {k: view.get(k) for k in ("epochs", "payee", "anchorer", "error")}
                print(f"  {name}: {json.dumps({k: v for k, v in parts.items() if v})}")
            raise SystemExit(f"demo: settlement not finished after {timeout_s} s")
        time.sleep(POLL_S * 3)


def _settlement_events(view: dict[str, Any]) -> list[str]:
    out = []
    if anchorer := view.get("anchorer"):
        for epoch in range(view.get("epochs", 0)):
            out.append(f"epoch {epoch} anchored on chain (Merkle root of earnings, bonded)")
        if anchorer.get("final_epoch") is not None:
            out.append(f"epoch {anchorer['final_epoch']} final: dispute window passed")
        if anchorer.get("workers_paid_out_here"):
            out.append(f"paid out {anchorer['workers_paid_out_here']} worker(s) in batches, "
                       f"up to epoch {anchorer['paid_out_epoch']}")  # fmt: skip
    if (payee := view.get("payee")) and int(payee.get("vouched_wei", 0)):
        out.append(f"holds signed vouchers for {format_wei(int(payee['vouched_wei']))}")
        if claim := payee.get("last_claim"):
            out.append(
                f"claimed epoch {claim['epoch']}: {format_wei(int(claim['paid_wei']))} paid "
                f"(cumulative {format_wei(int(claim['cumulative_wei']))})"
            )
        if earned := int(view.get("earned_wei", 0)):
            out.append(f"received {format_wei(earned)} of earnings on chain in all")
    return out


def _paid(view: dict[str, Any]) -> bool:
    """Whether a worker has received (paid out or claimed) everything its vouchers are worth,
    less the network fee (taken per epoch, rounded down, so the net is never below the exact
    share)."""
    payee = view.get("payee")
    if not payee or not int(payee.get("vouched_wei", 0)):
        return True
    return int(view.get("earned_wei", 0)) * BPS >= int(payee["vouched_wei"]) * (BPS - FEE_BPS)
