"""Anchoring outlives its sentry, on a whole localnet: two anchoring sentries; the one that
anchors (whichever posted first; the other stands by) is killed for good (kill -9, never
restarted). The other has followed its epochs from the entries gossiped for them; once the
first has been silent for 3 epochs and a window it takes over, anchors the next job's line,
and the worker is paid for both jobs in full. The escrow invariant holds after it.
"""

from __future__ import annotations

from pathlib import Path

from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import State
from tests.e2e.helpers import (
    ANSWER_JOB,
    ANSWER_WORK,
    escrow_returned,
    kill9,
    paid_in_full,
    poll,
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
    state = net.start(tmp_path / "ln", requesters=1, workers=1, sentries=2, chain_mode="auto",
                      overrides={"sentry-2": {"chain.anchor": True}})  # fmt: skip
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
