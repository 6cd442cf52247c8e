"""Bisecting a cross-class miss inside one segment down to one step: a sans-I/O machine.

    state     event                                   next      effects
    --------  --------------------------------------  --------  ----------------------------
    probing   start                                   probing   Probe(the middle step) |
                                                      stepping  CheckStep(lo, hi): one step
    probing   Probed, distance <= tolerance (agrees)  probing   Probe(the next middle) |
                                                      stepping  CheckStep(lo, hi) at hi = lo+1
    probing   Probed, distance > tolerance (differs)  probing   (as above)
                                                      stepping
    probing   Unanswered                              failed    Decide(fail, unprobed)
    stepping  Stepped, within the step's tolerance    passed    Decide(pass): drift, no cheat
    stepping  Stepped, over it (first time)           stepping  CheckStep(lo, hi) again
    stepping  Stepped again, the same replayed hash   failed    Decide(fail, step)
    stepping  Stepped again, another replayed hash    passed    Decide(pass, unsteady):
                                                                "unverifiable: ..."
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

One step from the same state differs between classes by one step's rounding, however much
the segment drifted: within ``step_tolerance_ppm`` of the state, or within a tenth of how far
the step moved it (:data:`STEP_SHARE`; rounding grows with the step, a skipped step is the
whole of it). A step the worker skipped, faked or ran at a lower precision differs by the
whole step. Every comparison here also requires equal random states (the runtime's ``rng``
check): randomness is not the worker's to choose, or it could answer a probe with the right
weights and another random stream and drift away "honestly" from there. So a bisection runs
only between classes whose generators are the same (the driver's rule). A worker steering
the search with chosen answers still ends at two adjacent states of its own, which the step
check judges. A fail names that step and carries both signed states' envelopes, so anyone
can re-run the one step to check it; only that is slashable
(:func:`consensus.verify.escalation.slashable`). A worker that does not
answer a probe is failed (its task re-runs) but not slashed: answering costs it a replay,
and slowness there proves no cheat.

A step over its tolerance is run once more before it fails, as a same-class game replays a
miss twice (:mod:`consensus.verify.game`): a job script that is not deterministic (it reads
the clock or ``/dev/urandom``) moves the state differently on every run, and would otherwise
get its honest worker slashed at the step check. If the sentry's two runs of the one step
give different states, the job is unsteady and the bisection ends in a pass whose reason
starts ``unverifiable`` (never slashable); if they agree, the step fails as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consensus.codec import encode
from consensus.market.messages import Workload
from consensus.verify.game import UNVERIFIABLE, Decide
from consensus.verify.messages import Attestation

State = Literal["probing", "stepping", "passed", "failed"]
TRANSITIONS: dict[tuple[State, str], frozenset[State]] = {
    ("probing", "start"): frozenset({"probing", "stepping"}),
    ("probing", "probed"): frozenset({"probing", "stepping"}),
    ("probing", "unanswered"): frozenset({"failed"}),
    ("stepping", "stepped"): frozenset({"stepping", "passed", "failed"}),
    ("stepping", "unanswered"): frozenset({"failed"}),
}
TERMINAL: frozenset[State] = frozenset({"passed", "failed"})
STEP_SHARE = 10  # a step's rounding may be up to 1/STEP_SHARE of how far the step moved
UNMEASURABLE_PPM = 1_000_000  # the runtimes' distance for states that do not compare
# One step's rounding across classes is measured in these only (tests/gpu/test_train_steps.py)
BISECTED_PRECISIONS = frozenset({"fp32", "fp64"})


@dataclass(frozen=True)
class Probed:
    """The worker's state after global step ``step`` (its hash ``claimed``) measured against
    the sentry's own replay to that step."""

    step: int
    claimed: bytes
    distance_ppm: int
    signed: bytes = b""  # the worker's sealed ProbeState: evidence that it claimed this


@dataclass(frozen=True)
class Stepped:
    """One step replayed from the worker's state at ``lo``: its hash, its distance to the
    worker's state at ``lo + 1``, and how far that step moved the state (from ``lo``)."""

    replayed: bytes
    distance_ppm: int
    moved_ppm: int


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
    again: bool = False  # the confirming run of a step that was over its tolerance


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
    signed: dict[int, bytes] = field(default_factory=dict)  # step -> its sealed ProbeState
    probes: list[tuple[int, bytes, int]] = field(default_factory=list)  # (step, hash, ppm)
    asked: int | None = None  # the step of the probe in flight
    first_run: Stepped | None = None  # the step check's first run, when it was over

    def __post_init__(self) -> None:
        if self.last <= self.first:
            raise ValueError(f"segment {self.segment}: no steps between {self.first}, {self.last}")
        self.lo, self.hi = self.first, self.last
        self.claims = {self.first: self.claimed_first, self.last: self.claimed_last}

    def start(self) -> list[Effect]:
        effect = self._next()  # a one-step segment goes straight to the step check
        self._move("start", "stepping" if isinstance(effect, CheckStep) else "probing")
        return [effect]

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
        self.signed[event.step] = event.signed
        self.probes.append((event.step, event.claimed, event.distance_ppm))
        if event.distance_ppm <= self.tolerance_ppm:
            self.lo = event.step
        else:
            self.hi = event.step
        effect = self._next()
        self._move("probed", "stepping" if isinstance(effect, CheckStep) else "probing")
        return [effect]

    def _stepped(self, event: Stepped) -> list[Effect]:
        off, step = event.distance_ppm, self.hi
        allowed = max(self.step_tolerance_ppm, _share_of_move(event.moved_ppm, self.tolerance_ppm))
        within = off <= allowed
        if not within and self.first_run is None:  # confirm it before blaming anyone
            self.first_run = event
            self._move("stepped", "stepping")
            return [CheckStep(self.lo, self.hi, again=True)]
        if self.first_run is not None and self.first_run.replayed != event.replayed:
            return self._unsteady(event)
        if within:
            reason = (
                f"segment {self.segment}: drift, not a cheat: bisected to step {step}, one step "
                f"from the worker's state is {off} ppm off (within {allowed})"
            )
        else:
            reason = (
                f"segment {self.segment}, step {step}: one step from the worker's own state is "
                f"{off} ppm from its next (over {allowed}; the step moved it {event.moved_ppm})"
            )
        self._move("stepped", "passed" if within else "failed")
        check = (self.lo, self.hi, self.claims[self.lo], self.claims[self.hi], event.replayed,
                 off, event.moved_ppm)  # fmt: skip
        signed = [self.signed.get(self.lo, b""), self.signed.get(self.hi, b"")]
        evidence = self._evidence(reason, {"check": list(check), "signed": signed})
        return [Decide(within, reason, evidence, "replays" if within else "step")]

    def _unsteady(self, event: Stepped) -> list[Effect]:
        assert self.first_run is not None
        reason = (f"{UNVERIFIABLE}the job is not deterministic (two runs of step {self.hi} of "
                  f"segment {self.segment} from the worker's state differ)")  # fmt: skip
        self._move("stepped", "passed")
        runs = [self.first_run.replayed, event.replayed]
        evidence = self._evidence(reason, {"runs": runs, "lo": self.lo, "hi": self.hi})
        return [Decide(True, reason, evidence, "unsteady")]

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


def _share_of_move(moved_ppm: int, tolerance_ppm: int) -> int:
    """The rounding one step may show beside the floor: a tenth of its move. A move that
    could not be measured (:data:`UNMEASURABLE_PPM`: the first step of a run, from the task's
    inputs or into an optimiser state that did not exist yet) grants no more than a whole
    segment's cross-class tolerance: a tenth of "unmeasurable" let a faked first step pass."""
    if moved_ppm >= UNMEASURABLE_PPM:
        return tolerance_ppm
    return moved_ppm // STEP_SHARE


def same_generators(worker_class: str, replay_class: str) -> bool:
    """Whether a replay in ``replay_class`` draws the same random numbers as the worker's run
    in ``worker_class`` (both determinism classes ``device|python|torch-V|...``): both on a
    CPU or both on GPUs, and the same torch. Only then can a bisection require equal random
    states; else an honest step would differ by its randomness (dropout on a GPU's generator
    against a CPU's)."""
    worker, replay = worker_class.split("|"), replay_class.split("|")
    on_cpu = worker[0] == "cpu", replay[0] == "cpu"
    torch = (
        [f for f in worker if f.startswith("torch-")],
        [f for f in replay if f.startswith("torch-")],
    )
    return on_cpu[0] == on_cpu[1] and bool(torch[0]) and torch[0] == torch[1]


def bisectable(workload: Workload) -> bool:
    """Whether a miss on ``workload`` can be bisected: a train task (states inside a segment)
    in a precision whose one-step rounding is measured. Others escalate only."""
    precision = workload.params.get("precision", "fp32")
    return workload.kind == "train" and precision in BISECTED_PRECISIONS


def will_bisect(att: Attestation, sentry_class: str) -> bool:
    """Whether a sentry replaying in ``sentry_class`` bisects its cross-class miss on ``att``
    (what a requester and settlement wait for, beyond the verdict timeout)."""
    workload = att.workload
    return (
        workload is not None
        and bisectable(workload)
        and same_generators(att.det_class, sentry_class)
    )
