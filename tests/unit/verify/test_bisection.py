"""consensus.verify.bisection: a cross-class miss narrowed to one step, on modelled runs.

A run is modelled by where the worker's states leave the sentry's: ``faked_at`` is the first
step whose state the worker did not compute (every state from it on differs by far more than
the tolerance); before it, states differ by ``drift`` ppm per step, as rounding between
classes does.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import decode
from consensus.verify import bisection as b
from consensus.verify.escalation import slashable
from consensus.verify.game import Decide

TOLERANCE, STEP_TOLERANCE = 50_000, 1_000
FAR = 1_000_000


def state(step: int) -> bytes:
    return step.to_bytes(4, "big") * 8


def bisection(first: int = 100, last: int = 164) -> b.Bisection:
    return b.Bisection(b"a" * 32, 3, first, last, state(first), state(last), TOLERANCE,
                       STEP_TOLERANCE)  # fmt: skip


def run(bis: b.Bisection, faked_at: int | None, drift: int = 10) -> tuple[Decide, list[int]]:
    """Plays the machine against the modelled worker; the decision and the steps probed."""
    effects, probed = bis.start(), []
    while True:
        [effect] = effects
        if isinstance(effect, Decide):
            return effect, probed
        if isinstance(effect, b.Probe):
            probed.append(effect.step)
            off = faked_at is not None and effect.step >= faked_at
            ppm = FAR if off else drift * (effect.step - bis.first)
            effects = bis.handle(b.Probed(effect.step, state(effect.step), ppm))
        else:
            assert effect.hi == effect.lo + 1
            ppm = FAR if effect.hi == faked_at else 10  # one step's rounding
            effects = bis.handle(b.Stepped(b"r" * 32, ppm))


@given(st.integers(min_value=101, max_value=164))
def test_any_faked_step_is_found_and_named_in_at_most_log2_probes(faked_at: int) -> None:
    bis = bisection()
    decision, probed = run(bis, faked_at)
    assert not decision.passed and decision.grounds == "step"
    assert decision.reason.startswith(f"segment 3, step {faked_at}: "), decision.reason
    assert len(probed) <= bis.probes_needed == 6
    assert bis.state == "failed" and (bis.lo, bis.hi) == (faked_at - 1, faked_at)
    assert slashable(decision, same_class=False), "one step from its own state: any class"


def test_drift_over_the_segments_tolerance_is_not_a_cheat() -> None:
    bis = bisection()
    decision, probed = run(bis, None, drift=TOLERANCE // 40)  # over tolerance after step 140
    assert decision.passed and decision.grounds == "replays"
    assert "drift, not a cheat" in decision.reason and "within 1000" in decision.reason
    assert (bis.lo, bis.hi) == (140, 141) and probed == [132, 148, 140, 144, 142, 141]


def test_the_evidence_names_the_step_and_both_claimed_states() -> None:
    bis = bisection()
    decision, probed = run(bis, 130)
    record = decode(decision.evidence)
    lo, hi, lo_claim, hi_claim, replayed, ppm = record["check"]
    assert (lo, hi, lo_claim, hi_claim) == (129, 130, state(129), state(130))
    assert (replayed, ppm) == (b"r" * 32, FAR)
    assert [p[0] for p in record["probes"]] == probed
    assert (record["first"], record["last"], record["segment"]) == (100, 164, 3)


def test_an_unanswered_probe_fails_without_a_slash() -> None:
    bis = bisection()
    [probe] = bis.start()
    assert probe == b.Probe(132)
    [decision] = bis.handle(b.Unanswered(132, "timed out"))
    assert isinstance(decision, Decide) and not decision.passed
    assert decision.grounds == "unprobed" and "step 132 not given: timed out" in decision.reason
    assert not slashable(decision, same_class=False)
    assert bis.handle(b.Probed(132, state(132), 0)) == [], "late answers change nothing"


def test_unasked_and_duplicate_probes_are_ignored() -> None:
    bis = bisection()
    bis.start()
    assert bis.handle(b.Probed(150, state(150), 0)) == [], "not the step asked for"
    assert bis.handle(b.Stepped(b"r" * 32, 0)) == [], "no step check asked for yet"
    assert bis.handle(b.Probed(132, state(132), 0)) == [b.Probe(148)]
    assert bis.handle(b.Probed(132, state(132), FAR)) == [], "a duplicate moves nothing"


def test_a_one_step_segment_goes_straight_to_the_step_check() -> None:
    bis = bisection(7, 8)
    assert bis.start() == [b.CheckStep(7, 8)] and bis.probes_needed == 0
    with pytest.raises(ValueError, match="no steps"):
        bisection(8, 8)
