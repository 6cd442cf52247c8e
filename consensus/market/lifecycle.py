"""Task states and the only transitions allowed between them; a job's state follows its tasks.

The table is the whole machine (h11 style): a (state, event) pair not in it is an error, our
bug or a stale input, never a silent change. The requester's job manager persists each step
with compare-and-set on (state, revision), so two writers cannot both move a task.

::

    queued ──open──> bidding ──award──> awarded ──fetching──> transferring ──running──> running
                       │  ^                │                      │                       │
                       │  └──reopen──┐     └───────────── lost / refused ──────────────┤
                       │             │                                                  │
                       │        reassigned <──────────── lost (worker gone, stopped) ───┘
                       │                                                                │
                       └─ expire ─> failed                                            done
                                                                                        v
                settled <──settle── verified <──verify── attested ──reject──> reassigned

    any non-terminal state ──cancel──> cancelled;  ──fail──> failed (with a reason)
"""

from __future__ import annotations

from typing import Final, Literal

TaskState = Literal[
    "queued",
    "bidding",
    "awarded",
    "transferring",
    "running",
    "attested",
    "verified",
    "settled",
    "reassigned",
    "failed",
    "cancelled",
]
TaskEvent = Literal[
    "open",  # an auction opens
    "award",  # a worker accepted the order
    "fetching",  # the worker reports it is fetching inputs
    "running",  # the worker reports the workload runs
    "done",  # the worker reports a result (its attestation)
    "verify",  # verification passed (or the job asked for none)
    "reject",  # verification failed: re-run elsewhere
    "settle",  # paid out on chain
    "lost",  # the worker vanished, stopped or refused: re-auction
    "reopen",  # a reassigned task's new auction opens
    "expire",  # the deadline passed without a result
    "fail",  # a reason not to go on (e.g. the workload itself fails)
    "cancel",  # the requester cancelled
]

TERMINAL: Final = frozenset({"settled", "failed", "cancelled"})
ACTIVE: Final = frozenset({"awarded", "transferring", "running"})  # a worker holds the task

_FORWARD: dict[tuple[TaskState, TaskEvent], TaskState] = {
    ("queued", "open"): "bidding",
    ("bidding", "award"): "awarded",
    ("awarded", "fetching"): "transferring",
    ("awarded", "running"): "running",
    ("transferring", "running"): "running",
    ("awarded", "done"): "attested",
    ("transferring", "done"): "attested",
    ("running", "done"): "attested",
    ("attested", "verify"): "verified",
    ("attested", "reject"): "reassigned",
    ("verified", "settle"): "settled",
    ("awarded", "lost"): "reassigned",
    ("transferring", "lost"): "reassigned",
    ("running", "lost"): "reassigned",
    ("reassigned", "reopen"): "bidding",
    ("bidding", "expire"): "failed",
    ("reassigned", "expire"): "failed",
}
_ANY_LIVE: dict[TaskEvent, TaskState] = {"cancel": "cancelled", "fail": "failed"}
_LIVE: tuple[TaskState, ...] = (
    "queued", "bidding", "awarded", "transferring", "running", "attested", "reassigned",
)  # fmt: skip

TRANSITIONS: Final[dict[tuple[TaskState, TaskEvent], TaskState]] = _FORWARD | {
    (state, event): target for state in _LIVE for event, target in _ANY_LIVE.items()
}


class IllegalTransition(ValueError):
    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no transition from {state} on {event}")
        self.state = state
        self.event = event


def advance(state: TaskState, event: TaskEvent) -> TaskState:
    """The state after ``event``; raises :class:`IllegalTransition` if the table has none."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise IllegalTransition(state, event)
    return target


# Ordered from least to most advanced: a job is as far along as its slowest task.
_PROGRESS: tuple[TaskState, ...] = (
    "queued", "bidding", "reassigned", "awarded", "transferring", "running", "attested",
    "verified", "settled",
)  # fmt: skip


def job_state(tasks: list[TaskState]) -> TaskState:
    """A job's state from its tasks: failed if any failed (the rest are then cancelled),
    cancelled if any was, else the state of its slowest task."""
    if not tasks:
        return "queued"
    for terminal in ("failed", "cancelled"):
        if terminal in tasks:
            return terminal
    return min(tasks, key=_PROGRESS.index)
