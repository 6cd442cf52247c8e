"""Honest hardware: a worker's claimed benchmark against what a sentry's probes measured.

A sentry probes each worker at random times (:mod:`consensus.verify.qos_schedule`) with the
seeded benchmark (``gpu/probe.py``): the worker prepares inputs from a fresh seed (untimed),
answers a ping (the network round trip), then computes the product for a second seed (timed:
the round trip less the ping's). Its answer commits to the whole product; the sentry checks
sampled rows. Timing on a busy machine is noisy and only ever understates a worker, so only a
claim well above the best of recent measurements is flagged, and only once two probes were
long enough to time (``CONCLUSIVE_MS``); a flagged worker is down-ranked (its bids rank after
unflagged ones, :mod:`consensus.market.auction`), never slashed, since speed is not bitwise
evidence (a wrong answer is, but it costs only the same flag here).

Per worker, the sentry's record turns outcomes into a flag::

    last WINDOW answers       last DODGES outcomes          flag
    ------------------------  ----------------------------  ---------------------------------
    any wrong answer          -                             "the benchmark proof does not ..."
    -                         all busy while announcing     "refused N probes in a row while
                              itself available                announcing itself available"
    >= MIN_CONCLUSIVE long    -                             benchmark_problem(claimed, best)
    enough to time
    otherwise                                               none

A silent worker (unreachable, timed out before it took the problem) is unavailable, not a
cheat: it is counted, never flagged. A busy one (no free GPU) may refuse: not a fault either.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

from consensus.errors import Invalid
from consensus.kinds import Body, exact_size
from consensus.market.spec import REFERENCE_GFLOPS, REFERENCE_SCORE

BENCH_TOLERANCE_PCT = 100  # claims up to 2x the measurement pass: timing on a busy machine
WINDOW = 3  # answers whose best measurement counts
MIN_CONCLUSIVE = 2  # answers long enough to time before a claim can be flagged as too high
CONCLUSIVE_MS = 50  # a timed step this long is dominated by the product, not by overheads
DODGES = 3  # refusals in a row, while announcing itself available, that flag
HISTORY = 10  # outcomes the report's counts cover
TARGET_MS = 100  # a probe is sized to take this long at the speed it tests
MIN_SIZE, MAX_SIZE, SIZE_STEP = 256, 8192, 64  # matrix sides; 8192: 768 MiB of fp32 on a GPU
SLOW_START = 8  # the next probe tests at most this multiple of the best speed measured yet
MAX_REASON = 200
MAX_PEER_ID = 128


def benchmark_problem(claimed: int, measured: int, proof_ok: bool,
                      tolerance_pct: int = BENCH_TOLERANCE_PCT) -> str:  # fmt: skip
    """Why the claim fails, or ``""``."""
    if not proof_ok:
        return "the benchmark proof does not match the challenge seed"
    if claimed * 100 > measured * (100 + tolerance_pct):
        return f"claims score {claimed}, measured {measured} (over {tolerance_pct} % above)"
    return ""


def flops_of(size: int) -> int:
    return 2 * size**3


def score_from(size: int, elapsed_ms: int) -> int:
    """The benchmark score a worker that multiplied two ``size`` matrices in ``elapsed_ms``
    shows (fp32 GFLOPS scaled so that the reference worker scores 1000), at least 1."""
    num = flops_of(size) * REFERENCE_SCORE
    den = max(1, elapsed_ms) * 1_000_000 * REFERENCE_GFLOPS
    return max(1, (num + den // 2) // den)


def size_for(score: int, target_ms: int = TARGET_MS) -> int:
    """The matrix side a worker of ``score`` multiplies in about ``target_ms``."""
    flops = score * REFERENCE_GFLOPS * 1_000_000 * target_ms // REFERENCE_SCORE
    side = _icbrt(flops // 2)
    side = (side + SIZE_STEP // 2) // SIZE_STEP * SIZE_STEP
    return min(MAX_SIZE, max(MIN_SIZE, side))


def _icbrt(value: int) -> int:
    """The integer cube root (floor) of a non-negative ``value``."""
    low, high = 0, 1 << (value.bit_length() // 3 + 1)
    while low < high:
        mid = (low + high + 1) // 2
        if mid**3 <= value:
            low = mid
        else:
            high = mid - 1
    return low


# --- the probe protocol (direct, sentry -> worker) -------------------------------------------

PROBE_ID_LEN = 16
OPS = ("prepare", "ping", "go")


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    """One step of a probe: ``prepare`` (draw the inputs from ``seed``, ``size`` x ``size``;
    untimed), ``ping`` (the network's round trip), ``go`` (the timed product, its column
    scales drawn from ``seed``). ``probe`` ties the three together."""

    op: str
    probe: bytes = field(metadata=exact_size(PROBE_ID_LEN))
    seed: int = 0
    size: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise Invalid("probe.op", f"{self.op!r}: one of {', '.join(OPS)}")
        if not 0 <= self.seed < 2**63:
            raise Invalid("probe.seed", "must be in 0..2**63-1")
        if self.op == "prepare" and not MIN_SIZE <= self.size <= MAX_SIZE:
            raise Invalid("probe.size", f"{self.size}: must be in {MIN_SIZE}..{MAX_SIZE}")


@dataclass(frozen=True, kw_only=True)
class ProbeAnswer:
    """The answer to ``go``: each row's sum of squares of the product (n little-endian
    fp32), and the worker's own account of the time and the device (shown, never trusted)."""

    sums: bytes
    compute_ms: int = 0
    device: str = ""


# --- one probe's outcome ------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """The worker took the problem and answered (or ran out the timed step's deadline, which
    is then its elapsed time: a slow worker cannot escape a measurement by going quiet)."""

    size: int
    elapsed_ms: int  # the timed step's round trip less the ping's
    latency_ms: int  # the ping's round trip
    proof_ok: bool

    @property
    def measured(self) -> int:
        return score_from(self.size, self.elapsed_ms)

    @property
    def conclusive(self) -> bool:
        return self.elapsed_ms >= CONCLUSIVE_MS


@dataclass(frozen=True)
class Busy:
    """The worker refused the probe as busy; ``dodged``: while its presence said available."""

    dodged: bool
    reason: str = ""


@dataclass(frozen=True)
class Silent:
    """No answer: unreachable, or a failure before the worker took the problem."""

    reason: str = ""


Outcome = Answered | Busy | Silent


@dataclass
class WorkerQos:
    """A sentry's recent probes of one worker, and what they say."""

    history: deque[Outcome] = field(default_factory=lambda: deque(maxlen=HISTORY))
    answers: deque[Answered] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, outcome: Outcome) -> None:
        self.history.append(outcome)
        if isinstance(outcome, Answered):
            self.answers.append(outcome)

    def best(self) -> int:
        """The best score measured in the window (0: none): noise only ever slows a worker."""
        return max((a.measured for a in self.answers if a.proof_ok), default=0)

    def next_size(self, claimed: int) -> int:
        """Slow start: the first probe is small; each next one tests at most ``SLOW_START``
        times the best measured yet (capped by the claim), so a worker whose claim is far
        above its speed is not handed minutes of work."""
        best = self.best()
        if best == 0:
            return MIN_SIZE
        basis = SLOW_START * best if claimed <= 0 else min(claimed, SLOW_START * best)
        return size_for(basis)

    def problem(self, claimed: int) -> str:
        """Why the worker is flagged, or ``""`` (see the module's table)."""
        for answer in self.answers:
            if not answer.proof_ok:
                return benchmark_problem(claimed, 0, proof_ok=False)
        recent = list(self.history)[-DODGES:]
        if len(recent) == DODGES and all(isinstance(o, Busy) and o.dodged for o in recent):
            return f"refused {DODGES} probes in a row while announcing itself available"
        if claimed <= 0 or sum(a.conclusive for a in self.answers) < MIN_CONCLUSIVE:
            return ""
        return benchmark_problem(claimed, self.best(), proof_ok=True)

    def latency_ms(self) -> int:
        """The latest ping's round trip (0: none yet)."""
        return self.answers[-1].latency_ms if self.answers else 0

    def report(self, worker: str, claimed: int, expires_ms: int, nonce: bytes) -> QosReport:
        reason = self.problem(claimed)
        return QosReport(
            expires_ms=expires_ms,
            nonce=nonce,
            worker=worker,
            claimed=max(0, claimed),
            measured=self.best(),
            probes=len(self.history),
            answered=sum(isinstance(o, Answered) for o in self.history),
            busy=sum(isinstance(o, Busy) for o in self.history),
            latency_ms=self.latency_ms(),
            flagged=bool(reason),
            reason=reason[:MAX_REASON],
        )


@dataclass(frozen=True, kw_only=True)
class QosReport(Body):
    """A sentry's signed word on one worker, gossiped after each probe of it.

    Attributes:
        worker: the probed worker's peer id.
        claimed: the benchmark score its presence announces (0: none announced).
        measured: the best score measured over the sentry's last answers (0: none).
        probes, answered, busy: over the sentry's last probes of it (at most 10); the rest
            went unanswered.
        latency_ms: the latest ping's round trip.
        flagged, reason: whether the worker is flagged as misstating its hardware, and why.
    """

    KIND: ClassVar[str] = "verify.qos/1"
    worker: str
    claimed: int
    measured: int
    probes: int
    answered: int
    busy: int
    latency_ms: int
    flagged: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0 < len(self.worker) <= MAX_PEER_ID:
            raise Invalid("qos.worker", f"a peer id of 1..{MAX_PEER_ID} characters")
        for name in ("claimed", "measured", "latency_ms"):
            if getattr(self, name) < 0:
                raise Invalid(f"qos.{name}", "must not be negative")
        if not 0 <= self.answered + self.busy <= self.probes <= HISTORY:
            raise Invalid("qos.probes", f"answered + busy <= probes <= {HISTORY}")
        if len(self.reason) > MAX_REASON:
            raise Invalid("qos.reason", f"at most {MAX_REASON} characters")
        if self.flagged != bool(self.reason):
            raise Invalid("qos.reason", "a flag has a reason, and only a flag")
