"""Quorum, slashing evidence, reputation; and the messages on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import decode, encode
from consensus.kinds import from_wire, to_wire
from consensus.verify.messages import Attestation, ChallengeResponse, Verdict, verify_registry
from consensus.verify.verdicts import (
    REP_MAX,
    REP_START,
    Tally,
    reputation_after,
    weighted_score,
)
from tests.unit.verify.factories import REF, honest


def verdict(passed: bool, evidence: bytes = b"e" * 32) -> Verdict:
    return Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker="w", attestation=b"a" * 32,
                   passed=passed, sampled=[1, 3], seed=b"s" * 32, evidence=evidence)  # fmt: skip


@pytest.mark.parametrize(
    ("votes", "quorum", "outcome", "slash"),
    [
        ([], 1, "pending", False),
        ([("s1", True)], 1, "verified", False),
        ([("s1", True)], 2, "pending", False),
        ([("s1", True), ("s2", True)], 2, "verified", False),
        ([("s1", False)], 1, "rejected", True),
        ([("s1", False)], 2, "rejected", False),  # not paid, but one word never slashes
        ([("s1", False), ("s2", False)], 2, "rejected", True),
        ([("s1", True), ("s2", False)], 2, "rejected", False),
        ([("s1", True), ("s1", False)], 1, "verified", False),  # first verdict counts
    ],
)
def test_tally(votes: list[tuple[str, bool]], quorum: int, outcome: str, slash: bool) -> None:
    tally = Tally(b"a" * 32, "w", quorum)
    for sentry, passed in votes:
        tally.add(sentry, verdict(passed))
    assert tally.outcome() == outcome
    evidence = tally.slashing()
    assert (evidence is not None) == slash
    if evidence is not None:
        assert evidence.worker == "w" and len(evidence.sentries) == quorum


@given(st.integers(0, REP_MAX), st.sampled_from(["pass", "fail", "missed"]))
def test_reputation_stays_in_range_and_moves_the_right_way(score: int, event: str) -> None:
    after = reputation_after(score, event)  # type: ignore[arg-type]
    assert 0 <= after <= REP_MAX
    assert after >= score if event == "pass" else after <= score


def test_slow_up_fast_down() -> None:
    score = REP_START
    for _ in range(10):
        score = reputation_after(score, "pass")
    gained = score - REP_START
    assert score - reputation_after(score, "fail") > 3 * gained  # one fail undoes 30 passes
    assert weighted_score(1000, REP_START) == 1000
    assert weighted_score(1000, reputation_after(REP_START, "fail")) == 500


def test_messages_round_trip_and_are_registered() -> None:
    run = honest(5)
    att = run.attestation()
    assert from_wire(Attestation, decode(encode(to_wire(att)))) == att
    answer = run.answer(3)
    assert from_wire(ChallengeResponse, decode(encode(to_wire(answer)))) == answer
    registry = verify_registry()
    assert registry.get("verify.attestation/1") is Attestation
    assert registry.get("verify.verdict/1") is Verdict


def test_attestation_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="segments"):
        honest(2).attestation(segments=0).__post_init__()


@pytest.mark.parametrize(
    ("claimed", "measured", "proof", "flagged"),
    [(1000, 1000, True, False), (1900, 1000, True, False), (2100, 1000, True, True),
     (1000, 1000, False, True), (500, 1000, True, False)],
)  # fmt: skip
def test_benchmark_claims(claimed: int, measured: int, proof: bool, flagged: bool) -> None:
    from consensus.verify.qos import benchmark_problem  # noqa: PLC0415 - one test's import

    assert bool(benchmark_problem(claimed, measured, proof)) == flagged
