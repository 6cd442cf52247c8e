"""Bisecting a cross-class miss inside one segment down to one step: a sans-I/O machine.

    state     event                                   next      effects
    --------  --------------------------------------  --------  ----------------------------
    probing   start                                   probing   Probe(the middle step)
    probing   Probed, distance <= tolerance (agrees)  probing   Probe(the next middle) |
                                                      stepping  CheckStep(lo, hi) at hi = lo+1
    probing   Probed, distance > tolerance (differs)  probing   (as above)
                                                      stepping
    probing   Unanswered                              failed    Decide(fail, unprobed)
    stepping  Stepped, distance <= step tolerance     passed    Decide(pass): drift, no cheat
    stepping  Stepped, distance > step tolerance      failed    Decide(fail, step)
    stepping  Unanswered                              failed    Decide(fail, unprobed)
    passed | failed  anything                         unchanged none (late answers)

A sentry of another determinism class cannot compare states bit for bit, and a segment's
drift (rounding that grows step by step) is not a cheat. So a segment that misses its
tolerance is narrowed to one step before anyone is blamed: ``lo`` starts at the segment's
first step (the worker's checkpoint, checked against the attested root: agreed) and ``hi`` at
its last (the attested end state: the miss). Each probe asks the worker for its state after
``mid`` steps while the sentry replays to ``mid`` itself; agreeing within the segment's
tolerance moves ``lo`` up, differing moves ``hi`` down. At ``hi = lo + 1`` the sentry runs that
one step from the worker's *own* state at ``lo`` and compares the worker's state at ``hi``.

One step from the same state differs between classes by one step's rounding, far under
``step_tolerance_ppm`` however much the segment drifted; a step the worker skipped, faked or
ran at a lower precision differs by the whole step. A worker steering the search with chosen
answers still ends at two adjacent states of its own, which the step check judges. A fail
names that step and both state hashes, so anyone can re-run the one step to check it; only
that is slashable (:func:`consensus.verify.escalation.slashable`). A worker that does not
answer a probe is failed (its task re-runs) but not slashed: answering costs it a replay,
and slowness there proves no cheat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consensus.codec import encode
from consensus.verify.game import Decide

State = Literal["probing", "stepping", "passed", "failed"]
TRANSITIONS: dict[tuple[State, str], frozenset[State]] = {
    ("probing", "probed"): frozenset({"probing", "stepping"}),
    ("probing", "unanswered"): frozenset({"failed"}),
    ("stepping", "stepped"): frozenset({"passed", "failed"}),
    ("stepping", "unanswered"): frozenset({"failed"}),
}
TERMINAL: frozenset[State] = frozenset({"passed", "failed"})


@dataclass(frozen=True)
class Probed:
    """The worker's state after global step ``step`` (its hash ``claimed``) measured against
    the sentry's own replay to that step."""

    step: int
    claimed: bytes
    distance_ppm: int


@dataclass(frozen=True)
class Stepped:
    """One step replayed from the worker's state at ``lo``: its hash, and its distance to
    the worker's state at ``lo + 1``."""

    replayed: bytes
    distance_ppm: int


@dataclass(frozen=True)
class Unanswered:
    step: int
    reason: str


Event = Probed | Stepped | Unanswered


@dataclass(frozen=True)
class Probe:
    """Ask the worker for its state after global step ``step`` and replay to it."""

    step: int


@dataclass(frozen=True)
class CheckStep:
    """Replay step ``hi`` from the worker's state at ``lo`` and measure it against the
    worker's state at ``hi``."""

    lo: int
    hi: int


Effect = Probe | CheckStep | Decide


@dataclass
class Bisection:
    """One missed segment, between its first step (agreed) and its last (the miss).

    Attributes:
        first: the global step the segment starts from (its checkpoint's step).
        last: the global step it ends at (the attested end state).
        claimed_first, claimed_last: the worker's state hashes there (attested).
        tolerance_ppm: a probe agrees within this (the segment's cross-class tolerance).
        step_tolerance_ppm: the one-step check passes within this.
    """

    att_id: bytes
    segment: int
    first: int
    last: int
    claimed_first: bytes
    claimed_last: bytes
    tolerance_ppm: int
    step_tolerance_ppm: int
    state: State = "probing"
    lo: int = field(init=False)
    hi: int = field(init=False)
    claims: dict[int, bytes] = field(default_factory=dict)  # step -> the worker's state hash
    probes: list[tuple[int, bytes, int]] = field(default_factory=list)  # (step, hash, ppm)
    asked: int | None = None  # the step of the probe in flight

    def __post_init__(self) -> None:
        if self.last <= self.first:
            raise ValueError(f"segment {self.segment}: no steps between {self.first}, {self.last}")
        self.lo, self.hi = self.first, self.last
        self.claims = {self.first: self.claimed_first, self.last: self.claimed_last}

    def start(self) -> list[Effect]:
        return [self._next()]

    def handle(self, event: Event) -> list[Effect]:
        if self.state in TERMINAL:
            return []
        if isinstance(event, Unanswered):
            return self._unanswered(event)
        if isinstance(event, Probed):
            return self._probed(event)
        if self.state != "stepping":
            return []
        return self._stepped(event)

    @property
    def probes_needed(self) -> int:
        """How many probes a bisection of this segment takes at most (log2 of its steps)."""
        return max(0, (self.last - self.first - 1).bit_length())

    def _next(self) -> Effect:
        if self.hi - self.lo == 1:
            self.asked = None
            return CheckStep(self.lo, self.hi)
        self.asked = (self.lo + self.hi) // 2
        return Probe(self.asked)

    def _probed(self, event: Probed) -> list[Effect]:
        if self.state != "probing" or event.step != self.asked:
            return []  # unasked, or a duplicate: nothing to learn from it
        self.claims[event.step] = event.claimed
        self.probes.append((event.step, event.claimed, event.distance_ppm))
        if event.distance_ppm <= self.tolerance_ppm:
            self.lo = event.step
        else:
            self.hi = event.step
        effect = self._next()
        self._move("probed", "stepping" if isinstance(effect, CheckStep) else "probing")
        return [effect]

    def _stepped(self, event: Stepped) -> list[Effect]:
        within = event.distance_ppm <= self.step_tolerance_ppm
        step = self.hi
        if within:
            reason = (
                f"segment {self.segment}: drift, not a cheat: bisected to step {step}, one step "
                f"from the worker's state is {event.distance_ppm} ppm off (within "
                f"{self.step_tolerance_ppm})"
            )
        else:
            reason = (
                f"segment {self.segment}, step {step}: one step from the worker's own state is "
                f"{event.distance_ppm} ppm from its next (over {self.step_tolerance_ppm})"
            )
        self._move("stepped", "passed" if within else "failed")
        check = (self.lo, self.hi, self.claims[self.lo], self.claims[self.hi], event.replayed,
                 event.distance_ppm)  # fmt: skip
        evidence = self._evidence(reason, {"check": list(check)})
        return [Decide(within, reason, evidence, "replays" if within else "step")]

    def _unanswered(self, event: Unanswered) -> list[Effect]:
        self._move("unanswered", "failed")
        reason = f"segment {self.segment}: state at step {event.step} not given: {event.reason}"
        return [Decide(False, reason, self._evidence(reason, {}), "unprobed")]

    def _evidence(self, reason: str, extra: dict[str, object]) -> bytes:
        return encode({"att": self.att_id, "segment": self.segment, "reason": reason,
                       "first": self.first, "last": self.last,
                       "probes": [list(p) for p in self.probes], **extra})  # fmt: skip

    def _move(self, event: str, to: State) -> None:
        allowed = TRANSITIONS.get((self.state, event), frozenset())
        if to not in allowed:
            raise AssertionError(f"no transition {self.state} --{event}--> {to}")
        self.state = to
