"""Proof-of-compute messages: attestation, seed commit/reveal and verdict on gossip; challenges
direct.

Flow for one finished task::

    worker      Attestation  --gossip verify/attest-->   sentries assigned to the task
    sentries    SeedCommit   --gossip verify/seed-->     (each commits to a secret)
    sentries    SeedReveal   --gossip verify/seed-->     seed = H(attestation, reveals)
    sentry      ChallengeRequest  --direct verify/challenge-->  worker (per sampled segment)
                <--ChallengeResponse--                   checkpoints i-1, i + Merkle proofs
    sentry      Verdict      --gossip verify/verdicts--> requester, other sentries, anchorer
    sentry      Escalation   --gossip verify/escalations--> instead of a verdict, when its
                replays in another determinism class missed: a sentry of the worker's class
                replays those segments bitwise and gossips a Verdict
    sentry      ProbeRequest --direct verify/probe-->    worker (the escalating sentry, for a
                <--ProbeState (signed)--                 runtime that bisects: its state inside
                                                         a missed segment), then a Verdict

Signed commitments are envelopes; a challenge response is a plain map whose every claim is
checked against the signed attestation's root, so it needs no signature of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from blake3 import blake3

from consensus.codec import encode
from consensus.errors import Invalid
from consensus.kinds import Body, Registry, exact_size, to_wire
from consensus.market.messages import HASH_LEN, BlobRef, Checkpoint, TaskRef, Workload
from consensus.verify.qos import QosReport

MAX_SEGMENTS = 1 << 20
MAX_CHECKPOINT_BYTES = 256 << 20  # a challenge answer carries one checkpoint file inline
MAX_POINTS = 64  # state hashes a segment may commit to (the last one is its end)


@dataclass(frozen=True, kw_only=True)
class Leaf:
    """One segment's leaf: its state hash and the chained hash up to it.

    ``points``: for an attestation with points (:attr:`Attestation.points` > 1), the digest of
    the segment's inner point hashes (:func:`consensus.verify.tree.points_digest`), so that the
    root commits to the states inside each segment too; empty otherwise.
    """

    index: int
    hash: bytes = field(metadata=exact_size(HASH_LEN))
    chained: bytes = field(metadata=exact_size(HASH_LEN))
    points: bytes = b""

    def __post_init__(self) -> None:
        if len(self.points) not in (0, HASH_LEN):
            raise Invalid("leaf.points", f"{len(self.points)} bytes: empty or {HASH_LEN}")


@dataclass(frozen=True, kw_only=True)
class Attestation(Body):
    """The worker's signed claim about a finished task, made before the seed exists.

    Attributes:
        root: Merkle root (:mod:`consensus.verify.tree`) over (index, hash, chained) of every
            attested segment, ``first`` to ``segments - 1``.
        segments: how many segments the task has; the last one closes the run.
        result_hash: the state hash of the last segment (the result the requester fetched).
        seconds: metered work seconds.
        runtime: train | render | exec.
        det_class: the determinism class (device model, driver/CUDA, library versions,
            threads): replays in the same class must match bit for bit.
        workload, inputs, listen: what a sentry needs to replay (the task's runtime spec, its
            inputs, held by the worker) and where to send challenges.
        first: the first attested segment: 0, or for an attempt resumed from another worker's
            checkpoint, the segment after it (the earlier ones are that worker's, not attested).
        start: for ``first`` > 0, the resume checkpoint (segment ``first - 1``): the chain of
            the attested leaves starts from its chained hash, and the worker serves its file.
        chain_address, binding_sig: the worker's chain account and its wallet's signature of
            the identity binding (``node.identity.wallet_binding``), so sentries that fail
            the task know whose stake to slash; empty where the worker does not settle.
        points: the states each segment commits to, evenly spaced in its steps, the last
            being its end (:func:`consensus.verify.sampling.point_step`): above 1, every leaf
            carries the digest of the ``points - 1`` inner ones, and a sentry may replay a
            segment only up to one of them (:func:`consensus.verify.sampling.stops`).
    """

    KIND: ClassVar[str] = "verify.attestation/1"
    ref: TaskRef
    worker: str
    root: bytes = field(metadata=exact_size(HASH_LEN))
    segments: int
    result_hash: bytes = field(metadata=exact_size(HASH_LEN))
    seconds: int
    runtime: str
    det_class: str
    workload: Workload | None = None
    inputs: BlobRef | None = None
    listen: list[str] = field(default_factory=list)
    first: int = 0
    start: Leaf | None = None
    chain_address: bytes = b""
    binding_sig: bytes = b""
    points: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.segments <= MAX_SEGMENTS:
            raise ValueError(f"segments must be in 1..{MAX_SEGMENTS}")
        if not 1 <= self.points <= MAX_POINTS:
            raise Invalid("attestation.points", f"{self.points}: must be in 1..{MAX_POINTS}")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        _check_range(self)
        if (len(self.chain_address), len(self.binding_sig)) not in ((0, 0), (20, 65)):
            raise Invalid("attestation.chain_address", "a 20-byte address with its 65-byte binding")


def _check_range(att: Attestation) -> None:
    """A resumed attestation's range and start point agree with each other.

    Raises:
        Invalid: ``first`` outside ``0..segments-1``, a start point missing, superfluous, or
            not closing segment ``first - 1``.
    """
    if not 0 <= att.first < att.segments:
        raise Invalid("attestation.first", f"{att.first}: must be in 0..{att.segments - 1}")
    if att.first == 0 and att.start is not None:
        raise Invalid("attestation.start", "only a resumed attestation (first > 0) has one")
    if att.first > 0 and att.start is None:
        raise Invalid("attestation.start", "missing: a resumed attestation names its start")
    if att.start is not None and att.start.index != att.first - 1:
        raise Invalid(
            "attestation.start.index", f"{att.start.index}: must be first - 1 = {att.first - 1}"
        )


def check_resume(att: Attestation, resume: Checkpoint | None) -> None:
    """That ``att`` starts where the task's order said: from the inputs, or from ``resume``.

    The requester runs this against the checkpoint it handed over, so a resumed worker cannot
    attest a continuation of a history of its own making.

    Raises:
        Invalid: the first segment or the start point differs from the order's.
    """
    want = 0 if resume is None else resume.index + 1
    if att.first != want:
        raise Invalid("attestation.first", f"{att.first}: the order resumed at {want}")
    if resume is None or att.start is None:
        return
    if att.start.hash != resume.hash:
        raise Invalid("attestation.start.hash", "is not the order's resume checkpoint's")
    if att.start.chained != resume.chained:
        raise Invalid("attestation.start.chained", "is not the order's resume checkpoint's")


def attestation_id(att: Attestation) -> bytes:
    """What seeds, verdicts and evidence name: BLAKE3 of the attestation's canonical body.

    An unresumed attestation is hashed without ``first`` and ``start``, one without a chain
    account without ``chain_address`` and ``binding_sig``, one without points without
    ``points`` (nor its start leaf's), so its id is the same as before those fields existed
    (nodes of either version agree on it).
    """
    wire = to_wire(att)
    if att.first == 0:
        del wire["first"], wire["start"]
    elif att.start is not None and not att.start.points:
        del wire["start"]["points"]
    if not att.chain_address:
        del wire["chain_address"], wire["binding_sig"]
    if att.points == 1:
        del wire["points"]
    return blake3(b"idlegrid.verify.att/1" + encode(wire)).digest()


@dataclass(frozen=True, kw_only=True)
class SeedCommit(Body):
    """A sentry's commitment to its secret share of the challenge seed."""

    KIND: ClassVar[str] = "verify.seed-commit/1"
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    commitment: bytes = field(metadata=exact_size(HASH_LEN))


@dataclass(frozen=True, kw_only=True)
class SeedReveal(Body):
    """The secret behind a :class:`SeedCommit`; published once the commit window closed."""

    KIND: ClassVar[str] = "verify.seed-reveal/1"
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    secret: bytes = field(metadata=exact_size(HASH_LEN))


@dataclass(frozen=True, kw_only=True)
class Verdict(Body):
    """A sentry's signed judgement of one attestation.

    Attributes:
        passed: every sampled segment replayed to the attested hash (or within tolerance).
        sampled: the segments checked, as the public rule derives them from ``seed``.
        seed: the challenge seed (anyone recomputes it from the reveals and the rule).
        evidence: BLAKE3 of the kept evidence (:func:`consensus.verify.game.evidence_hash`):
            the failing segment's checkpoints, proofs, the replayed hash.
        reason: the first failing check in words, or "".
        worker_address, slash_wei, slash_sig: on a fail, when the worker's attestation bound
            its chain account: the sentry's EIP-712 ``Slash(worker_address, slash_wei,
            attestation)`` signature, for the settlement contract (``node/chain/slasher.py``).
    """

    KIND: ClassVar[str] = "verify.verdict/1"
    ref: TaskRef
    worker: str
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    passed: bool
    sampled: list[int]
    seed: bytes = field(metadata=exact_size(HASH_LEN))
    evidence: bytes = field(metadata=exact_size(HASH_LEN))
    reason: str = ""
    worker_address: bytes = b""
    slash_wei: int = 0
    slash_sig: bytes = b""

    def __post_init__(self) -> None:
        if not self.slash_sig:
            return
        if self.passed or len(self.slash_sig) != 65 or len(self.worker_address) != 20:
            raise Invalid("verdict.slash_sig", "65 bytes, on a fail, with a 20-byte worker address")
        if self.slash_wei <= 0:
            raise Invalid("verdict.slash_wei", f"must be positive, got {self.slash_wei}")


MAX_DET_CLASS = 200


@dataclass(frozen=True, kw_only=True)
class Miss:
    """One segment a cross-class replay missed: the sentry's distance (None: its runtime gives
    none), its replayed state hash and the hash the worker claimed."""

    index: int
    distance_ppm: int | None = None
    replayed: bytes = field(metadata=exact_size(HASH_LEN))
    claimed: bytes = field(metadata=exact_size(HASH_LEN))


@dataclass(frozen=True, kw_only=True)
class Escalation(Body):
    """A sentry's signed word that its replays, in another determinism class than the
    worker's, missed on ``misses`` (every other sampled segment passed within tolerance).

    It is not a fail and never counts toward one: a sentry of the worker's class replays the
    missed segments bitwise and gossips a normal :class:`Verdict`
    (:mod:`consensus.verify.escalation`).

    Attributes:
        det_class: the escalating sentry's determinism class (differs from the attestation's).
        seed, sampled: the challenge seed and the segments it sampled, as in a verdict.
        tolerance_ppm: the tolerance the sentry judged against; every known distance exceeds it.
        evidence: BLAKE3 of the kept evidence record (each miss's answer, the replayed hash).
    """

    KIND: ClassVar[str] = "verify.escalation/1"
    ref: TaskRef
    worker: str
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    det_class: str
    seed: bytes = field(metadata=exact_size(HASH_LEN))
    sampled: list[int]
    misses: list[Miss]
    tolerance_ppm: int
    evidence: bytes = field(metadata=exact_size(HASH_LEN))
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0 < len(self.det_class) <= MAX_DET_CLASS:
            raise Invalid("escalation.det_class", f"1 to {MAX_DET_CLASS} characters")
        if not 0 <= self.tolerance_ppm <= 1_000_000:
            raise Invalid("escalation.tolerance_ppm", f"{self.tolerance_ppm}: not in 0..1000000")
        indices = [m.index for m in self.misses]
        if not indices or len(set(indices)) != len(indices):
            raise Invalid("escalation.misses", "at least one, each segment once")
        if not set(indices) <= set(self.sampled):
            raise Invalid("escalation.misses", f"{indices}: not all among sampled")
        for i, miss in enumerate(self.misses):
            _check_miss(miss, self.tolerance_ppm, f"escalation.misses[{i}]")


def _check_miss(miss: Miss, tolerance_ppm: int, path: str) -> None:
    """A miss is a real one: hashes differ, and a stated distance is over the tolerance."""
    if miss.replayed == miss.claimed:
        raise Invalid(f"{path}.replayed", "equals the claimed hash: that is no miss")
    if miss.distance_ppm is not None and not tolerance_ppm < miss.distance_ppm <= 1_000_000:
        raise Invalid(
            f"{path}.distance_ppm", f"{miss.distance_ppm}: must be over {tolerance_ppm}, <= 1000000"
        )


@dataclass(frozen=True, kw_only=True)
class ChallengeRequest:
    """A sentry asks the worker for what it needs to replay segment ``index``.

    ``with_end``: also send segment ``index``'s own checkpoint file, which a sentry replaying
    in another determinism class measures its replay's distance against (a same-class sentry
    compares hashes and does not ask for it; a worker that predates the field ignores it).
    """

    ref: TaskRef
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    index: int
    with_end: bool = False


@dataclass(frozen=True, kw_only=True)
class ChallengeResponse:
    """Checkpoint ``index - 1`` (the replay's start; none for segment 0, which starts from the
    inputs) and the leaves of ``index - 1`` and ``index`` with their Merkle proofs.

    For the first segment of a resumed attestation, ``before`` is the attestation's ``start``
    (signed in it, so without a proof) and ``checkpoint`` the resume checkpoint's file.

    ``end_checkpoint``: segment ``index``'s own file (its BLAKE3 is ``after.hash``), only when
    the request asked ``with_end``; empty otherwise, and from workers that predate it.

    ``points``: for an attestation with points, segment ``index``'s inner point hashes (their
    digest is ``after.points``); a sentry compares a replay stopped at one of them to it.

    A file too big to travel in the answer goes by reference instead (``checkpoint_blob``,
    ``end_blob``; its bytes field empty): the worker grants the sentry that blob, which it
    fetches in pieces and puts in place of the reference before judging."""

    ref: TaskRef
    index: int
    before: Leaf | None = None
    before_proof: list[bytes] = field(default_factory=list)
    after: Leaf
    after_proof: list[bytes] = field(default_factory=list)
    checkpoint: bytes = b""  # the file whose BLAKE3 is before.hash
    end_checkpoint: bytes = b""  # the file whose BLAKE3 is after.hash, when asked
    checkpoint_blob: BlobRef | None = None
    end_blob: BlobRef | None = None
    points: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.points) >= MAX_POINTS or any(len(p) != HASH_LEN for p in self.points):
            raise Invalid("response.points", f"under {MAX_POINTS} hashes of {HASH_LEN} bytes")


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    """A bisecting sentry asks the worker for its state after global step ``step``, inside
    segment ``index`` (:mod:`consensus.verify.bisection`)."""

    ref: TaskRef
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    index: int
    step: int


@dataclass(frozen=True, kw_only=True)
class ProbeState(Body):
    """The worker's signed answer to a probe: its state after ``step`` hashes to ``hash``.

    Signed, unlike a challenge answer, because nothing attested covers a state inside a
    segment: a bisection that fails the worker names two of these, and anyone re-running that
    one step holds the worker to its own signed states. The file travels as ``blob`` (granted
    to the asking sentry), whose plaintext must hash to ``hash``.
    """

    KIND: ClassVar[str] = "verify.probe-state/1"
    ref: TaskRef
    attestation: bytes = field(metadata=exact_size(HASH_LEN))
    index: int
    step: int
    hash: bytes = field(metadata=exact_size(HASH_LEN))
    blob: BlobRef


VERIFY_KINDS: tuple[type[Body], ...] = (
    Attestation,
    SeedCommit,
    SeedReveal,
    Verdict,
    QosReport,
    Escalation,
)
# Signed, but sent direct (never gossiped): the market's direct envelopes open them too.
VERIFY_DIRECT_KINDS: tuple[type[Body], ...] = (ProbeState,)


def verify_registry() -> Registry:
    return Registry(VERIFY_KINDS)
