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
from consensus.market.messages import Workload
from consensus.verify import bisection as b
from consensus.verify.escalation import slashable
from consensus.verify.game import Decide

TOLERANCE, STEP_TOLERANCE = 50_000, 1_000
MOVED = 2_000  # how far one step moves the modelled state
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
            effects = bis.handle(
                b.Probed(effect.step, state(effect.step), ppm, b"s%d" % effect.step)
            )
        else:
            assert effect.hi == effect.lo + 1
            ppm = MOVED if effect.hi == faked_at else 10  # skipped: off by the whole step
            effects = bis.handle(b.Stepped(b"r" * 32, ppm, MOVED))


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
    lo, hi, lo_claim, hi_claim, replayed, ppm, moved = record["check"]
    assert (lo, hi, lo_claim, hi_claim) == (129, 130, state(129), state(130))
    assert (replayed, ppm, moved) == (b"r" * 32, MOVED, MOVED)
    assert record["signed"] == [b"s129", b"s130"], "the worker's own signed claims"
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
    assert bis.handle(b.Stepped(b"r" * 32, 0, 0)) == [], "no step check asked for yet"
    assert bis.handle(b.Probed(132, state(132), 0)) == [b.Probe(148)]
    assert bis.handle(b.Probed(132, state(132), FAR)) == [], "a duplicate moves nothing"


def test_a_one_step_segment_goes_straight_to_the_step_check() -> None:
    bis = bisection(7, 8)
    assert bis.start() == [b.CheckStep(7, 8)] and bis.probes_needed == 0
    [decision] = bis.handle(b.Stepped(b"r" * 32, 10, 2_000))
    assert isinstance(decision, Decide) and decision.passed
    with pytest.raises(ValueError, match="no steps"):
        bisection(8, 8)


def checked(bis: b.Bisection, stepped: b.Stepped) -> Decide:
    """The step check's decision, the sentry's runs of the step agreeing (``stepped`` twice
    when the first is over)."""
    [effect] = bis.handle(stepped)
    if isinstance(effect, b.CheckStep):
        assert effect == b.CheckStep(bis.lo, bis.hi, again=True)
        [effect] = bis.handle(stepped)
    assert isinstance(effect, Decide)
    return effect


def test_a_step_whose_two_runs_differ_is_unverifiable_not_a_fail() -> None:
    bis = bisection(7, 8)
    bis.start()
    assert bis.handle(b.Stepped(b"r" * 32, 50_000, 100_000)) == [b.CheckStep(7, 8, again=True)]
    [decision] = bis.handle(b.Stepped(b"s" * 32, 50_000, 100_000))
    assert isinstance(decision, Decide) and decision.passed and decision.grounds == "unsteady"
    assert decision.reason == (
        "unverifiable: the job is not deterministic (two runs of step 8 of segment 3 from the "
        "worker's state differ)"
    )
    assert bis.state == "passed" and bis.handle(b.Stepped(b"r" * 32, 0, 0)) == []


def test_a_steps_rounding_may_grow_with_the_step_but_not_reach_it() -> None:
    """Within the floor, or a tenth of how far the step moved the state: honest; a step
    skipped is off by all of its move."""
    for off, moved, passed in ((1_000, 0, True), (1_001, 0, False), (9_000, 100_000, True),
                               (11_000, 100_000, False), (100_000, 100_000, False)):  # fmt: skip
        bis = bisection(7, 8)
        bis.start()
        decision = checked(bis, b.Stepped(b"r" * 32, off, moved))
        assert decision.passed is passed, (off, moved)


def test_a_first_step_whose_move_cannot_be_measured_gets_the_segments_tolerance_only() -> None:
    """A run's first step has no state to measure its move from (the task's inputs, an
    optimiser state not made yet): the runtime says FAR, and a tenth of that (100000 ppm)
    let a faked first step pass. Now it gets a segment's tolerance at most."""
    for off, passed in ((STEP_TOLERANCE, True), (TOLERANCE, True), (TOLERANCE + 1, False),
                        (FAR // 10, False)):  # fmt: skip
        bis = bisection(0, 1)
        bis.start()
        decision = checked(bis, b.Stepped(b"r" * 32, off, FAR))
        assert decision.passed is passed, off
    assert b.UNMEASURABLE_PPM == FAR


def test_only_classes_with_the_same_generators_are_bisected() -> None:
    cpu, torch = "cpu|py3.11.7|torch-2.13.0", "|numpy-2.3.0"
    assert b.same_generators(cpu + torch, cpu + "|numpy-2.4.0"), "numpy draws nothing here"
    assert b.same_generators("A100|py3.11|torch-2.13.0", "RTX 4090|py3.12|torch-2.13.0")
    assert not b.same_generators(cpu + torch, "A100|py3.11.7|torch-2.13.0" + torch), "GPU's RNG"
    assert not b.same_generators(cpu, "cpu|py3.11.7|torch-2.12.0"), "another torch"
    assert not b.same_generators("cpu|py3.11.7", "cpu|py3.11.7"), "no torch: not a train class"


def test_only_fp32_and_fp64_train_tasks_are_bisectable() -> None:
    def train(precision: str) -> Workload:
        return Workload(kind="train", segments=2, params={"precision": precision})

    assert b.bisectable(train("fp32")) and b.bisectable(train("fp64"))
    assert b.bisectable(Workload(kind="train", segments=2)), "fp32 unless said"
    assert not b.bisectable(train("bf16")) and not b.bisectable(train("fp16"))
    assert not b.bisectable(Workload(kind="exec", command=["true"]))
