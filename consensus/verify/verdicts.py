"""Verdicts from several sentries -> the task's outcome, slashing evidence, reputation.

    passes >= quorum, no fail       verified  (the requester pays)
    fails >= quorum                 rejected  + SlashingEvidence (settlement slashes the stake)
    fails >= 1, below quorum        rejected  (not paid, re-run elsewhere; no slash on one word)
    nothing yet                     pending

One failing verdict already stops payment: its evidence is re-checkable and a re-run costs
the requester only time, while paying a cheat is lost money. Slashing takes a quorum, so one
faulty or hostile sentry can cost a worker one payment, never its stake.

Reputation is an integer in 0..REP_MAX (parts per million), slow up, fast down: a pass closes
1/64 of the gap to the top, a fail halves it, a missed challenge takes a quarter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consensus.verify.messages import Verdict

Outcome = Literal["pending", "verified", "rejected"]
REP_MAX = 1_000_000
REP_START = 500_000
REP_UP_DIVISOR = 64


@dataclass(frozen=True)
class SlashingEvidence:
    """What settlement needs to slash: the attestation, the worker, the failing verdicts."""

    attestation: bytes
    worker: str
    sentries: tuple[str, ...]
    evidence: tuple[bytes, ...]


@dataclass
class Tally:
    attestation: bytes
    worker: str
    quorum: int
    passes: dict[str, Verdict] = field(default_factory=dict)
    fails: dict[str, Verdict] = field(default_factory=dict)

    def add(self, sentry: str, verdict: Verdict) -> None:
        """One vote per sentry; its first verdict counts (a sentry cannot flip)."""
        if sentry in self.passes or sentry in self.fails:
            return
        (self.passes if verdict.passed else self.fails)[sentry] = verdict

    def outcome(self) -> Outcome:
        if self.fails:
            return "rejected"
        return "verified" if len(self.passes) >= self.quorum else "pending"

    def slashing(self) -> SlashingEvidence | None:
        if len(self.fails) < self.quorum:
            return None
        sentries = tuple(sorted(self.fails))
        evidence = tuple(self.fails[s].evidence for s in sentries)
        return SlashingEvidence(self.attestation, self.worker, sentries, evidence)


def reputation_after(score: int, event: Literal["pass", "fail", "missed"]) -> int:
    """Slow up, fast down; always within 0..REP_MAX."""
    score = max(0, min(REP_MAX, score))
    if event == "pass":
        return score + (REP_MAX - score) // REP_UP_DIVISOR
    if event == "fail":
        return score // 2
    return score - score // 4


def weighted_score(bench_score: int, reputation: int) -> int:
    """A bid's benchmark score weighed by reputation: a fresh worker (REP_START) keeps its
    score, a proven one gains up to x2, a failed one sinks towards 0."""
    return bench_score * max(0, min(REP_MAX, reputation)) // REP_START
