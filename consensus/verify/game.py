"""The sentry's challenge game for one attestation: a sans-I/O machine.

    state        event                      next state                effects
    -----------  -------------------------  ------------------------  --------------------------
    challenging  start                      challenging               Challenge per sampled seg.
    challenging  Answered, checks pass      challenging               Replay(segment)
    challenging  Answered, a check fails    failed                    Decide(fail, evidence)
    challenging  Refused / deadline passed  failed                    Decide(fail): silence fails
    challenging  Replayed, equal            challenging | passed      Decide(pass) after the last
    challenging  Replayed, differs (same    challenging               Replay(segment) again, to
                 determinism class)                                   confirm the sentry's own
    challenging  the confirming replay      failed                    Decide(fail, evidence)
                 gives the first one's hash
    challenging  the confirming replay      challenging | passed      (as equal, the segment noted
                 differs from the first                                unsteady): Decide(pass,
                                                                       "unverifiable: ...") last
    challenging  Replayed, cross-class,     challenging | passed      (as equal)
                 distance <= tolerance
    challenging  Replayed, cross-class,     challenging | escalated   the miss is noted; the other
                 distance > tolerance                                  segments still replay
    challenging  the last replay, with      escalated                 Escalate(misses): a sentry
                 misses noted                                          in the worker's class decides
    passed | failed | escalated  anything   unchanged                 none (late answers)

A cross-class miss is never a fail: the replays go on (a cheat on another segment is still
caught by the checks that hold in every class), and if nothing fails, the game ends escalated
with every missed segment, for a sentry of the worker's class to replay bitwise
(:mod:`consensus.verify.escalation`). Each :class:`Decide` names its grounds, so that only
class-independent grounds or a same-class replay ever back a slash.

**A same-class miss is replayed twice.** A job script that is not deterministic (it reads the
clock, ``/dev/urandom``, an unseeded generator) gives a different state on every run, so an
honest worker's segment would miss a replay and be slashed: a requester could so have honest
workers slashed at the cost of a job. The sentry therefore replays a missed segment once more
before failing it. Only when both of its replays agree, and differ from the worker's hash, is
the worker wrong; replays that disagree with each other show the job itself unsteady. Such a
segment cannot be judged, and the game ends in a pass whose reason starts ``unverifiable``
(``grounds="unsteady"``), which the requester takes as accepted, not verified: the worker is
paid for work nobody can check, and the requester learns its job cannot be verified. A
cheat cannot reach that pass on a deterministic job: it controls neither of the sentry's
replays.

Checks on an answer for segment ``i``: both leaves under the attested root at their index,
``chained_i == H(chained_{i-1} || hash_i)`` (one history, in order), the checkpoint file hashes to
``hash_{i-1}``, the end file (sent when a cross-class sentry asks for it) hashes to ``hash_i``,
for the final segment ``hash_i`` equals the attested result hash, and with points the inner
point hashes sent match the leaf's digest of them.

**Points.** A same-class game is given the point each sampled segment stops at
(:func:`consensus.verify.sampling.stops`): a replay stopped at an inner point ``j`` is compared
to the worker's point hash ``j``, one at the last point to ``hash_i`` as before. A cross-class
game replays every segment whole (a distance needs the worker's state file, and only segment
ends are kept as files).

A cross-class sentry asks for segment ``i``'s end file too: its runtime measures the distance
between its replay's state and that file (:class:`Replayed`'s ``distance_ppm``). A worker that
predates the field sends none; the replay then has no distance, a miss, as before.

A resumed attestation covers segments ``first..N-1`` only. Its segment ``first`` starts from the
resume checkpoint named in the attestation itself (``start``): the answer's starting leaf must
be exactly that one (no proof: it is signed in the attestation), its file must hash to it, and
the replay runs from it. So the continuity from the earlier worker's checkpoint is checked;
that worker's own segments are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from blake3 import blake3

from consensus.codec import encode
from consensus.kinds import to_wire
from consensus.verify import tree
from consensus.verify.messages import Attestation, ChallengeResponse

State = Literal["challenging", "passed", "failed", "escalated"]
TRANSITIONS: dict[tuple[State, str], frozenset[State]] = {
    ("challenging", "answered"): frozenset({"challenging", "failed"}),
    ("challenging", "refused"): frozenset({"failed"}),
    ("challenging", "timeout"): frozenset({"failed"}),
    ("challenging", "replayed"): frozenset({"challenging", "passed", "failed", "escalated"}),
}
TERMINAL: frozenset[State] = frozenset({"passed", "failed", "escalated"})


@dataclass(frozen=True)
class Answered:
    response: ChallengeResponse


@dataclass(frozen=True)
class Refused:
    index: int
    reason: str


@dataclass(frozen=True)
class Replayed:
    """The runtime's replay of ``index``: its state hash, and for a replay in another
    determinism class the normalised distance to the claimed state, in parts per million."""

    index: int
    hash: bytes
    distance_ppm: int | None = None


Event = Answered | Refused | Replayed


@dataclass(frozen=True)
class Challenge:
    index: int
    deadline_ms: int


@dataclass(frozen=True)
class Replay:
    """Re-run segment ``index`` from ``checkpoint`` (empty: from the task's inputs); ``end``
    is the worker's checkpoint file of ``index`` (hashing to ``expected``) to measure a
    cross-class replay's distance against, or empty (same class, or not sent). ``stop``: the
    inner point of the attestation's ``points`` to stop at (``expected`` is then that
    point's hash), or 0 for the whole segment."""

    index: int
    checkpoint: bytes
    expected: bytes
    end: bytes = b""
    stop: int = 0
    again: bool = False  # the confirming replay of a same-class miss


Grounds = Literal["replays", "answer", "silence", "replay", "step", "unprobed", "unsteady"]


@dataclass(frozen=True)
class Decide:
    """The game's verdict.

    Attributes:
        grounds: ``replays`` (a pass), ``answer`` (an answer inconsistent with the signed
            attestation), ``silence`` (refused or late) or ``replay`` (a replay differs; only a
            same-class game fails on it); from a bisection (:mod:`consensus.verify.bisection`),
            ``step`` (one step from the worker's own state differs) or ``unprobed`` (it did not
            give a state a probe asked for); on a pass, ``unsteady`` (two replays of one
            segment disagreed: the job is not deterministic, so nothing was judged there).
    """

    passed: bool
    reason: str
    evidence: bytes  # the canonical evidence record; its BLAKE3 goes into the verdict
    grounds: Grounds = "replays"


@dataclass(frozen=True)
class Missed:
    """A cross-class replay over tolerance: what the sentry got against what was claimed."""

    index: int
    distance_ppm: int | None  # None: the runtime gives no distance (a hash only)
    replayed: bytes
    claimed: bytes


@dataclass(frozen=True)
class Escalate:
    misses: tuple[Missed, ...]
    reason: str
    evidence: bytes  # the canonical evidence record (every miss's answer and replayed hash)


Effect = Challenge | Replay | Decide | Escalate


UNVERIFIABLE = "unverifiable: "  # starts the reason of a pass on an unsteady job


def unverifiable(passed: bool, reason: str) -> bool:
    """Whether a verdict passed only because its job proved not deterministic (an escalation's
    answer quotes the game's reason after its own words, so it is looked for anywhere)."""
    return passed and UNVERIFIABLE in reason


def evidence_hash(evidence: bytes) -> bytes:
    return blake3(b"idlegrid.verify.evidence/1" + evidence).digest()


@dataclass
class Game:
    """One sentry judging one attestation over the sampled segments.

    Attributes:
        same_class: the sentry replays in the worker's determinism class (bitwise compare).
        tolerance_ppm: the calibrated cross-class distance below which a segment passes.
        stops: the point each sampled segment's replay stops at (same class, an attestation
            with points); a segment not in it, or at the last point, replays whole.
    """

    att: Attestation
    att_id: bytes
    sampled: list[int]
    deadline_ms: int
    same_class: bool
    tolerance_ppm: int
    stops: dict[int, int] = field(default_factory=dict)
    state: State = "challenging"
    pending: set[int] = field(default_factory=set)  # challenged, not yet answered
    # answered, being replayed: the answer, the point it stops at (0: the end), and the hash
    # the replay must give
    replaying: dict[int, tuple[ChallengeResponse, int, bytes]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    missed: dict[int, tuple[Missed, bytes]] = field(default_factory=dict)  # with its record
    # same-class misses being replayed again: the first replay's hash
    confirming: dict[int, bytes] = field(default_factory=dict)
    unsteady: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # the two replays

    def start(self) -> list[Effect]:
        self.pending = set(self.sampled)
        return [Challenge(i, self.deadline_ms) for i in self.sampled]

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if self.state in TERMINAL:
            return []
        if isinstance(event, Answered):
            return self._answered(event.response, now_ms)
        if isinstance(event, Refused):
            reason = f"segment {event.index}: refused: {event.reason}"
            return self._fail("refused", reason, b"", "silence")
        return self._replayed(event)

    def on_tick(self, now_ms: int) -> list[Effect]:
        if self.state == "challenging" and self.pending and now_ms >= self.deadline_ms:
            late = sorted(self.pending)
            reason = f"segments {late}: no answer before the deadline"
            return self._fail("timeout", reason, b"", "silence")
        return []

    def next_deadline(self) -> int | None:
        return self.deadline_ms if self.state == "challenging" and self.pending else None

    # --- steps ---------------------------------------------------------------------------

    def _answered(self, answer: ChallengeResponse, now_ms: int) -> list[Effect]:
        index = answer.index
        if index not in self.pending:
            return []  # unasked or a duplicate: nothing to learn from it
        if now_ms > self.deadline_ms:
            return self.on_tick(now_ms)
        problem = check_answer(self.att, answer)
        if problem:
            return self._fail("answered", f"segment {index}: {problem}", _record(answer), "answer")
        self.pending.discard(index)
        self._move("answered", "challenging")
        stop = self.stops.get(index, 0) if self.same_class else 0
        if not 0 < stop < self.att.points:
            stop = 0  # the end: a whole segment
        expected = answer.points[stop - 1] if stop else answer.after.hash
        self.replaying[index] = (answer, stop, expected)
        end = b"" if self.same_class else answer.end_checkpoint
        return [Replay(index, answer.checkpoint, expected, end, stop)]

    def _replayed(self, event: Replayed) -> list[Effect]:
        answer, stop, expected = self.replaying.pop(event.index, (None, 0, b""))
        if answer is None:
            return []
        equal = event.hash == expected
        first = self.confirming.pop(event.index, None)
        if first is not None and event.hash == first:  # the sentry's replays agree: a fail
            at = f" at point {stop} of {self.att.points}" if stop else ""
            reason = f"segment {event.index}{at}: replay gives 0x{event.hash.hex()[:16]}..."
            return self._fail("replayed", reason, _record(answer, event.hash), "replay")
        if first is not None:  # they disagree: the job is not deterministic
            self.unsteady[event.index] = (first, event.hash)
            equal = True  # nothing to judge there: the other segments decide
        elif not equal and self.same_class:
            self.replaying[event.index] = (answer, stop, expected)
            self.confirming[event.index] = event.hash
            self._move("replayed", "challenging")
            return [Replay(event.index, answer.checkpoint, expected, b"", stop, again=True)]
        if not equal and (event.distance_ppm is None or event.distance_ppm > self.tolerance_ppm):
            miss = Missed(event.index, event.distance_ppm, event.hash, answer.after.hash)
            self.missed[event.index] = (miss, _record(answer, event.hash))
        self.done.add(event.index)
        if self.done != set(self.sampled):
            self._move("replayed", "challenging")
            return []
        if self.missed:
            self._move("replayed", "escalated")
            return [self._escalate()]
        self._move("replayed", "passed")
        return [self._pass()]

    def _pass(self) -> Decide:
        evidence: dict[str, object] = {"att": self.att_id, "sampled": self.sampled}
        if not self.unsteady:
            return Decide(True, "", encode(evidence))
        shown = sorted(self.unsteady)
        more = f", and of {len(shown) - 1} more" if len(shown) > 1 else ""
        reason = (f"{UNVERIFIABLE}the job is not deterministic (two replays of segment "
                  f"{shown[0]} differ{more})")  # fmt: skip
        evidence["unsteady"] = [[i, *self.unsteady[i]] for i in shown]
        return Decide(True, reason, encode(evidence), "unsteady")

    def _escalate(self) -> Escalate:
        misses = tuple(self.missed[i][0] for i in sorted(self.missed))
        shown = ", ".join(f"{m.index} ({_ppm(m.distance_ppm)})" for m in misses)
        reason = f"cross-class replay over {self.tolerance_ppm} ppm on segments {shown}"
        records = [self.missed[m.index][1] for m in misses]
        evidence = encode({"att": self.att_id, "reason": reason, "records": records})
        return Escalate(misses, reason, evidence)

    def _fail(self, event: str, reason: str, record: bytes, grounds: Grounds) -> list[Effect]:
        self._move(event, "failed")
        self.pending.clear()
        self.replaying.clear()
        evidence = encode({"att": self.att_id, "reason": reason, "record": record})
        return [Decide(False, reason, evidence, grounds)]

    def _move(self, event: str, to: State) -> None:
        allowed = TRANSITIONS.get((self.state, event), frozenset())
        if to not in allowed:
            raise AssertionError(f"no transition {self.state} --{event}--> {to}")
        self.state = to


def _ppm(distance: int | None) -> str:
    return "no distance" if distance is None else f"{distance} ppm"


def check_answer(att: Attestation, answer: ChallengeResponse) -> str:
    """The first reason ``answer`` is inconsistent with the attestation, or ``""``."""
    index, after = answer.index, answer.after
    if answer.ref != att.ref:
        return "answers for another task"
    under = tree.verify(att.root, after, att.segments, answer.after_proof, att.first)
    if after.index != index or not under:  # an index outside first..segments-1 is not
        return "checkpoint leaf not under the attested root"
    previous, problem = _start_of(att, answer)
    if problem:
        return problem
    if tree.chain(previous, after.hash) != after.chained:
        return "checkpoints out of order (the chain breaks)"
    return _end_problem(att, answer) or _points_problem(att, answer)


def _points_problem(att: Attestation, answer: ChallengeResponse) -> str:
    """Why the inner point hashes sent are not the ones the leaf committed to, or ``""``."""
    if att.points == 1:
        return "" if not answer.after.points else "a leaf with points in an attestation without"
    if len(answer.points) != att.points - 1:
        return f"{len(answer.points)} inner point hashes, not {att.points - 1}"
    if tree.points_digest(answer.points) != answer.after.points:
        return "the inner point hashes do not match the attested leaf"
    return ""


def _end_problem(att: Attestation, answer: ChallengeResponse) -> str:
    """Why the segment's end state is refused: not the attested result, or a file sent for
    it that is not that state."""
    after = answer.after
    if answer.index == att.segments - 1 and after.hash != att.result_hash:
        return "the final state is not the attested result"
    if answer.end_checkpoint and blake3(answer.end_checkpoint).digest() != after.hash:
        return "the end checkpoint file does not match its attested hash"
    return ""


def _start_of(att: Attestation, answer: ChallengeResponse) -> tuple[bytes, str]:
    """The chained hash the segment starts from, or why the starting checkpoint is refused."""
    before = answer.before
    if answer.index == 0:
        return tree.GENESIS, ""
    if before is None or before.index != answer.index - 1:
        return b"", "the starting checkpoint's leaf is missing"
    if answer.index == att.first:  # a resumed run's first segment: from the attested start
        if before != att.start:
            return b"", "the starting checkpoint is not the attested resume point"
    elif not tree.verify(att.root, before, att.segments, answer.before_proof, att.first):
        return b"", "starting leaf not under the attested root"
    if blake3(answer.checkpoint).digest() != before.hash:
        return b"", "the checkpoint file does not match its attested hash"
    return before.chained, ""


def _record(answer: ChallengeResponse, replayed: bytes = b"") -> bytes:
    """What anyone needs to re-check a failure: the answer (minus the bulky files, named by
    their hashes) and what the replay gave."""
    wire = to_wire(answer)
    wire["checkpoint"] = blake3(answer.checkpoint).digest()
    for by_reference in ("checkpoint_blob", "end_blob"):  # the sentry fetched them into it
        wire.pop(by_reference, None)
    if answer.end_checkpoint:
        wire["end_checkpoint"] = blake3(answer.end_checkpoint).digest()
    else:
        del wire["end_checkpoint"]  # as before the field existed: the same record, same hash
    if not answer.points:  # likewise
        del wire["points"]
        for leaf in ("before", "after"):
            if wire.get(leaf) is not None and not wire[leaf]["points"]:
                del wire[leaf]["points"]
    return encode({"answer": wire, "replayed": replayed})
