"""A network partition on a whole localnet (five daemons, one chain, settlement on), healed after
a while: no task runs under two awards at once, every job completes, and the money adds up.

The partition is made at the libp2p layer with the operator's own tool, ``idlegrid peers
block`` (``POST /v1/peers/block``): every node of one group blocks every node of the other, so
no connection, gossip or request crosses. Network namespaces would cut deeper (the kernel
drops the packets), but CI machines often refuse unprivileged namespaces; blocking needs
nothing but the daemons.

The cut goes through a running task: job A runs on worker W; the partition puts W (with the
sentry) on one side, the requester (with the other worker) on the other. The requester stops
hearing W, fails the task over, and a second job submitted during the partition can only go
to the requester's side. Then the partition heals.

What the APIs show, and so what is asserted: the requester's ledger (``/v1/job``) has, per
task, one attempt that ran to the end ("done"), and each attempt closed before the next was
awarded; no voucher reached a worker beyond that ledger. The cut-off worker does not know it
was replaced; it pauses when its vouchers stop, after a grace no longer than the requester's
``lost_after_ms``, and stops once its own ``voucher_hold_ms`` has passed
(tests/services/test_cut_off_worker.py checks the timing on a mock clock).

Verification is ``none`` on purpose: exec jobs are checked by sampled re-execution, and an
attestation gossiped while its sentry is cut off is not re-broadcast, so the requester would
wait out ``verify.verdict_timeout_ms`` (120 s) and accept the task unverified; what this test
asserts is the market's and settlement's behaviour across the cut, and settlement does cross
it: the sentry anchors the requester side's vouchers only after the heal.

Synchronised by polling the daemons' APIs within deadlines, never by sleeping a fixed time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.localnet import net
from node.localnet.nodes import TUNING
from node.localnet.procs import stop_all
from node.localnet.state import NodeInfo, State
from tests.e2e.helpers import BPS, FEE_BPS, FINAL, api, poll
from tests.e2e.invariant import assert_escrow_invariant

JOB = """
name = "{name}"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "slow.py"]
estimate_s = {seconds}

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
for i in range({ticks}):
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


def submit(requester: NodeInfo, tmp_path: Path, name: str, ticks: int) -> str:
    job_dir = tmp_path / name
    job_dir.mkdir()
    (job_dir / "slow.py").write_text(SLOW.format(ticks=ticks))
    spec = JOB.format(name=name, seconds=max(1, ticks // 2))
    return str(api(requester).post("/v1/jobs", {"spec": spec, "base_dir": str(job_dir)})["job_id"])


def job(requester: NodeInfo, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = api(requester).get(f"/v1/job?id={job_id}")
    return view


def split(groups: list[list[NodeInfo]], *, block: bool) -> None:
    """Every node of each group blocks (or unblocks) every node of the other groups."""
    for group in groups:
        others = [n for g in groups if g is not group for n in g]
        for node in group:
            for other in others:
                if block:
                    body = {"peer_id": other.peer_id, "reason": "partition test"}
                    assert api(node).post("/v1/peers/block", body)["blocked"]
                else:
                    assert api(node).post("/v1/peers/unblock", {"peer_id": other.peer_id})


def connected(node: NodeInfo) -> set[str]:
    return {p["peer_id"] for p in api(node).get("/v1/peers")["peers"] if p["connected"]}


def test_partition_through_a_running_task_heals_and_every_job_completes_once(
    localnet: State, tmp_path: Path
) -> None:
    requester = localnet.node("requester-1")
    sentry = localnet.node("sentry-1")
    workers = [n for n in localnet.nodes if n.role == "worker"]
    job_a = submit(requester, tmp_path, "a", ticks=16)

    def running_on() -> str | None:
        view = job(requester, job_a)
        task = view["task_states"][0]
        return task["worker"] if task["state"] == "running" else None

    cut_worker = poll("job a running", running_on, 60)
    far = next(w for w in workers if w.peer_id == cut_worker)
    near = next(w for w in workers if w is not far)
    sides = [[requester, near], [far, sentry]]
    split(sides, block=True)
    for side in sides:
        other = {n.peer_id for s in sides if s is not side for n in s}
        for node in side:
            poll(f"{node.name} cut off", lambda: True if not connected(node) & other else None, 10)  # noqa: B023

    job_b = submit(requester, tmp_path, "b", ticks=6)  # only the near side can hear it

    def failed_over() -> bool | None:
        attempts = job(requester, job_a)["attempts"]
        return True if len(attempts) >= 2 else None

    poll("job a failed over during the partition", failed_over, 60)
    for node in (requester, near):  # the cut held all along
        assert not connected(node) & {far.peer_id, sentry.peer_id}
    split(sides, block=False)  # heal

    def final(job_id: str) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            view = job(requester, job_id)
            return view if view["state"] in FINAL else None

        return probe

    views = {j: poll(f"job {j} final after the heal", final(j), 120) for j in (job_a, job_b)}
    for job_id, view in views.items():
        assert view["state"] == "verified", f"{job_id}: {view['reason']}"
        check_one_award_at_a_time(view)
    attempts_a = views[job_a]["attempts"]
    assert attempts_a[0]["worker"] == far.peer_id and attempts_a[0]["outcome"] != "done"
    assert views[job_b]["attempts"][0]["worker"] == near.peer_id, "b went across the cut"
    # The cut-off worker's own copy stops by itself (it finishes, or it was paused for want of
    # vouchers and its hold ran out).
    hold_s = TUNING["market.voucher_hold_ms"] / 1000
    poll(
        f"{far.name} idle",
        lambda: True if not api(far).get("/v1/worker")["running"] else None,
        hold_s + 30,
    )
    check_money(requester, workers, [a for v in views.values() for a in v["attempts"]])
    assert_escrow_invariant(localnet)


def check_one_award_at_a_time(view: dict[str, Any]) -> None:
    """Per task, one attempt that ran to the end ("done"), each closed before the next award."""
    for task in {a["task"] for a in view["attempts"]}:
        mine = sorted(
            (a for a in view["attempts"] if a["task"] == task), key=lambda a: a["attempt"]
        )
        assert [a["outcome"] for a in mine].count("done") == 1, mine
        for before, after in itertools.pairwise(mine):
            assert before["ended_ms"] is not None and before["ended_ms"] <= after["started_ms"], (
                f"task {task}: attempts {before['attempt']} and {after['attempt']} overlap"
            )


def check_money(
    requester: NodeInfo, workers: list[NodeInfo], attempts: list[dict[str, Any]]
) -> None:
    """Escrow returned; each worker paid its vouchers less the fee (a failed-over attempt only
    up to its cap, the requester's ``payable_wei``), never more than vouched.

    The cut-off worker's attempt is capped at its last held checkpoint: nothing here (exec
    tasks have none). Its vouchers reach the anchorers when its copy stops, after the cap."""
    payable: dict[str, int] = {}
    for a in attempts:
        payable[a["worker"]] = payable.get(a["worker"], 0) + int(a["payable_wei"] or 0)

    def due(peer: str, theirs: dict[str, dict[str, Any]]) -> int:
        return min(int(theirs[peer]["payee"]["vouched_wei"]), payable[peer])

    def settled() -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
        mine = api(requester).get("/v1/chain")
        theirs = {w.peer_id: api(w).get("/v1/chain") for w in workers}
        if set(mine["escrow"]["jobs"]) != {"returned"}:
            return None
        for peer in payable:
            # The last voucher comes with the final report: it may be anchored an epoch later.
            if int(theirs[peer]["earned_wei"]) * BPS < due(peer, theirs) * (BPS - FEE_BPS):
                return None
        return mine, theirs

    mine, theirs = poll("escrow returned and every worker paid", settled, 180)
    paid_total = 0
    for peer, cap in payable.items():
        vouched, paid = int(theirs[peer]["payee"]["vouched_wei"]), int(theirs[peer]["earned_wei"])
        assert paid * BPS >= due(peer, theirs) * (BPS - FEE_BPS), "its vouchers (to the cap)"
        assert paid <= min(vouched, cap), "never more than signed, or than the cap"
        signed = sum(int(a["vouched_wei"]) for a in attempts if a["worker"] == peer)
        assert vouched <= signed, "no voucher reached a worker beyond the requester's ledger"
        paid_total += due(peer, theirs)
    escrow = mine["escrow"]["jobs"]["returned"]
    kept = int(escrow["funded_wei"]) - int(escrow["returned_wei"])
    # A voucher signed but never delivered (the cut) stays in the requester's pool, never with
    # a worker: at most one voucher interval (1 s at the attempt's price) per attempt.
    slack = sum(int(a["price_wei_per_s"]) for a in attempts)
    assert paid_total <= kept <= paid_total + slack, (kept, paid_total, slack)
