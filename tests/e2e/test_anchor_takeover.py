"""Anchoring outlives its sentry, on a whole localnet, where every sentry anchors: of two
sentries, the one anchoring (whichever posted first; the other stands by) is killed for good
(kill -9, never restarted). The other has followed its epochs from the entries gossiped for
them; once the first has been silent for 3 epochs and a window it takes over, anchors the
next job's line, and the worker is paid for both jobs in full. The escrow invariant holds.
"""

from __future__ import annotations

from pathlib import Path

from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import State
from tests.e2e.helpers import (
    ANSWER_JOB,
    ANSWER_WORK,
    api,
    escrow_returned,
    kill9,
    paid_in_full,
    poll,
    restart,
    submit,
    wait_final,
)
from tests.e2e.invariant import assert_escrow_invariant, chain_contract

# No sentry judges these: the test is about settlement, and a dead sentry may stay assigned.
UNCHECKED = ANSWER_JOB.replace('verification = "standard"', 'verification = "none"')


def anchorers(state: State) -> list[str]:
    _, contract = chain_contract(state)
    events = contract.events.Anchored().get_logs(from_block=0)
    return [e["args"]["anchorer"].lower() for e in sorted(events, key=lambda e: e["args"]["epoch"])]


def test_the_anchoring_sentry_killed_for_good_the_other_takes_over_and_the_worker_is_paid(
    tmp_path: Path,
) -> None:
    state = net.start(tmp_path / "ln", requesters=1, workers=1, sentries=2, chain_mode="auto")
    try:
        run(state, tmp_path)
    finally:
        stop_all(state.procs())


def run(state: State, tmp_path: Path) -> None:
    requester, worker = state.node("requester-1"), state.node("worker-1")
    sentries = {n.address.lower(): n for n in (state.node("sentry-1"), state.node("sentry-2"))}
    for n in (1, 2):
        job_id = submit(requester, tmp_path / f"job{n}", UNCHECKED, {"work.py": ANSWER_WORK})
        view = wait_final(requester, job_id, 90)
        assert view["state"] == "verified", view["reason"]
        poll(f"the worker paid for job {n}", lambda: paid_in_full(worker), 60 if n == 1 else 180)
        if n == 1:
            (active,) = set(anchorers(state))  # whichever came first; the other stood by
            kill9(sentries.pop(active))  # for good: its last epoch may still be pending
    (standby,) = sentries
    who = anchorers(state)
    assert who[-1] == standby, f"the last anchor is not the standby's: {who}"
    poll("escrow returned", lambda: escrow_returned(requester), 60)
    assert_escrow_invariant(state)


def test_an_anchoring_sentry_started_late_catches_up_from_history_and_takes_over(
    tmp_path: Path,
) -> None:
    """sentry-2 is down while sentry-1 anchors the first job; restarted, it cannot rebuild
    that epoch from gossip, asks sentry-1 for its history over libp2p, catches up, and takes
    over when sentry-1 is killed for good."""
    state = net.start(tmp_path / "ln", requesters=1, workers=1, sentries=2, chain_mode="auto")
    try:
        requester, worker = state.node("requester-1"), state.node("worker-1")
        first, second = state.node("sentry-1"), state.node("sentry-2")
        kill9(second)
        job_id = submit(requester, tmp_path / "job1", UNCHECKED, {"work.py": ANSWER_WORK})
        assert wait_final(requester, job_id, 90)["state"] == "verified"
        poll("the worker paid for job 1", lambda: paid_in_full(worker), 60)
        restart(second)

        def caught_up() -> bool | None:
            anchoring = api(second).get("/v1/chain").get("anchorer") or {}
            return (
                anchoring.get("index", -1) >= 0 and anchoring["stopped_at_epoch"] is None
            ) or None

        poll("sentry-2 caught up from sentry-1's history", caught_up, 120)
        kill9(first)
        job_id = submit(requester, tmp_path / "job2", UNCHECKED, {"work.py": ANSWER_WORK})
        assert wait_final(requester, job_id, 90)["state"] == "verified"
        poll("the worker paid for both jobs", lambda: paid_in_full(worker), 180)
        who = anchorers(state)
        assert who[0] == first.address.lower() and who[-1] == second.address.lower(), who
        poll("escrow returned", lambda: escrow_returned(requester), 60)
        assert_escrow_invariant(state)
    finally:
        stop_all(state.procs())
