"""The task state table: the happy path, failover, and that nothing leaves a terminal state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.market.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    TaskEvent,
    TaskState,
    advance,
    job_state,
)

EVENTS: list[TaskEvent] = sorted({event for _, event in TRANSITIONS})


def run(*events: TaskEvent) -> TaskState:
    state: TaskState = "queued"
    for event in events:
        state = advance(state, event)
    return state


def test_the_happy_path() -> None:
    assert run("open", "award", "fetching", "running", "done", "verify", "settle") == "settled"


def test_failover_reopens_bidding() -> None:
    assert run("open", "award", "running", "lost", "reopen", "award", "done") == "attested"
    assert run("open", "award", "done", "reject", "reopen") == "bidding"


def test_illegal_transitions_raise() -> None:
    with pytest.raises(IllegalTransition, match="no transition from queued on done"):
        run("done")
    with pytest.raises(IllegalTransition):
        run("open", "award", "settle")


@given(st.lists(st.sampled_from(EVENTS), max_size=30))
def test_terminal_states_are_final(events: list[TaskEvent]) -> None:
    state: TaskState = "queued"
    for event in events:
        try:
            new = advance(state, event)
        except IllegalTransition:
            continue
        assert state not in TERMINAL, f"left terminal {state} on {event}"
        state = new


def test_job_state_follows_the_slowest_task_unless_one_failed() -> None:
    assert job_state([]) == "queued"
    assert job_state(["verified", "running", "settled"]) == "running"
    assert job_state(["verified", "failed"]) == "failed"
    assert job_state(["cancelled", "failed"]) == "failed"
    assert job_state(["cancelled", "verified"]) == "cancelled"
