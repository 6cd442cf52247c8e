"""The runner's live auction wakes only for real effects (else its loop spins until the
window closes, burning a core per open auction and starving a mock clock)."""

from __future__ import annotations

from consensus.market import auction as au
from node.market.task_runner import LiveAuction


def test_nothing_to_do_does_not_wake_the_runner() -> None:
    live = LiveAuction(machine=None)  # type: ignore[arg-type]  # feed never touches it
    live.feed([])
    assert not live.wake.is_set()
    live.feed([au.NoBids(passes=())])
    assert live.wake.is_set()
    assert live.effects == [au.NoBids(passes=())]
