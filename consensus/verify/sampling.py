"""Which segments a sentry re-executes, and what that buys: the public sampling rule.

From the seed, ``s`` distinct segments are drawn among the first ``N - 1`` (a keyed BLAKE3
stream, rejection-sampled so every segment is equally likely) and the final segment is always
added, since it carries the result the requester received. Everyone with the seed derives the
same set, so a worker cannot choose it and a sentry cannot single out segments.

An attestation of a resumed attempt covers only segments ``first..N-1`` (the earlier ones ran
on another worker and are not its claim): the draw is then among ``first..N-2``, and the
guarantee is stated over those ``N - first`` segments.

If a cheater faked ``k`` of the ``N - 1`` non-final segments, the chance that none of the ``s``
sampled ones is faked is hypergeometric: ``C(N-1-k, s) / C(N-1, s)``. Exact integer arithmetic
(``fractions``), so the stated guarantee is a lower bound, not a float approximation.

**Points.** Where each segment also commits to ``m`` evenly spaced states (its end the last;
:attr:`~consensus.verify.messages.Attestation.points`), the seed draws for each sampled
non-final segment a point ``j`` uniform in ``1..m`` (:func:`stops`), and the sentry replays
only up to it: about ``(m + 1) / 2m`` of a segment on average, 56 % for ``m = 8``. The point
is drawn through a step ``u`` uniform in the segment's steps (the first point at or after
it), and a replay to it catches any faked step up to ``u`` (the state there is computed from
the checked start, so a faked earlier step changes it): a segment with ``k`` of its ``L``
steps faked, wherever they lie, is caught with probability at least ``k / L``. A job with a
fraction ``f`` of its compute faked, the final segment honest, has ``f N / (N - 1)`` of its
non-final steps faked (segments are equal to within one step), so each sample catches it
with probability at least that on average. Sampling segments without replacement does no
worse than with it (Hoeffding, 1963), so ``P(miss) <= (1 - f N / (N - 1))^s``, stated
exactly. It is a little weaker than the
hypergeometric bound for whole segments (which a cheater faking whole segments still meets):
16 samples give 99 % at 25 % faked either way from 256 to 1024 segments, at 56 % of the cost.
The final segment is always replayed whole, and so is every segment of a job short enough
that all its segments are sampled (:func:`uses_points`): points would only weaken its check.
"""

from __future__ import annotations

from fractions import Fraction
from math import ceil, comb

from blake3 import blake3

from consensus.errors import Invalid


def sample(seed: bytes, segments: int, size: int, first: int = 0) -> list[int]:
    """The sorted segments to check: ``min(size, N - 1 - first)`` drawn among
    ``first..N-2``, plus the last.

    Raises:
        Invalid: ``segments`` < 1, ``size`` < 0 or ``first`` outside ``0..segments-1``.
    """
    if segments < 1:
        raise Invalid("sample.segments", f"{segments}: at least 1")
    if size < 0:
        raise Invalid("sample.size", f"{size}: not negative")
    if not 0 <= first < segments:
        raise Invalid("sample.first", f"{first}: must be in 0..{segments - 1}")
    pool = segments - 1 - first
    want = min(size, pool)
    chosen: set[int] = set()
    key = seed + segments.to_bytes(8, "big") + (first.to_bytes(8, "big") if first else b"")
    stream = blake3(b"idlegrid.verify.sample/1" + key)
    bound = (1 << 64) - (1 << 64) % pool if pool else 0
    offset = 0
    while len(chosen) < want:
        block = stream.digest(length=8, seek=offset)
        offset += 8
        value = int.from_bytes(block, "big")
        if value < bound:  # rejection: no bias towards low indices
            chosen.add(first + value % pool)
    return [*sorted(chosen), segments - 1]


POINTS: dict[str, int] = {"train": 8}  # the points a runtime's segments commit to (else 1)
_STOPS = b"idlegrid.verify.stops/1"


def stops(seed: bytes, sampled: list[int], segments: int, points: int, steps: int) -> list[int]:
    """For each of ``sampled`` (as :func:`sample` gives them) of a run of ``steps`` steps, the
    point its replay stops at: the first point at or after a step drawn uniformly from the
    segment's steps (so a point is drawn as often as its share of the steps), ``points`` (the
    end) for the final segment. Drawing by steps keeps the bound exact where a segment's steps
    do not split evenly into its points, or are fewer.

    Raises:
        Invalid: ``points`` < 1, or fewer ``steps`` than ``segments``.
    """
    if points < 1:
        raise Invalid("stops.points", f"{points}: at least 1")
    if steps < segments:
        raise Invalid("stops.steps", f"{steps}: fewer than the {segments} segments")
    stream = blake3(_STOPS + seed + segments.to_bytes(8, "big") + steps.to_bytes(8, "big"))
    out, offset = [], 0
    for index in sampled:
        if index == segments - 1:
            out.append(points)
            continue
        length = (index + 1) * steps // segments - index * steps // segments
        bound = (1 << 64) - (1 << 64) % length
        while True:
            value = int.from_bytes(stream.digest(length=8, seek=offset), "big")
            offset += 8
            if value < bound:  # rejection: every step equally likely
                drawn = 1 + value % length
                out.append(-(-drawn * points // length))  # the first point at or after it
                break
    return out


def uses_points(attested: int, size: int) -> bool:
    """Whether replays stop at points: not where every attested non-final segment is sampled
    (a short job), which whole replays check completely."""
    return size < attested - 1


def choose_points(cost: float, segments: int, size: int, most: int) -> int:
    """How many points a worker's segments should commit to: the count among ``most``,
    ``most / 2``, ... 1 that minimises the work spent on verification, in segments: the
    worker hashing ``m - 1`` inner states per segment (each ``cost`` of a segment's compute,
    as it measured) and one sentry replaying ``size`` segments to a stop (``(m + 1) / 2m`` of
    each on average) and the final one whole. 1 for a job whose every segment is sampled.

    Any count keeps the stated guarantee (:func:`detection_probability` holds for all); this
    only trades the worker's hashing against the sentry's replays. ``most`` is a power of two,
    so every smaller count's points are among its own (:func:`common_points`).
    """
    if not uses_points(segments, size):
        return 1
    counts = [most >> k for k in range(most.bit_length()) if (most >> k) << k == most]

    def spent(m: int) -> float:
        return (m - 1) * cost * segments + size * (m + 1) / (2 * m) + 1

    return min(counts, key=lambda m: (spent(m), -m))


def common_points(per_segment: list[list[bytes]]) -> tuple[int, list[list[bytes]]]:
    """The point count every segment of a run has in common, and each segment's inner point
    hashes at that count (a subset of its own: the child may lower its count after measuring
    the first segments, ``most``, ``most / 2``, ...). ``(1, [])`` without points.

    Raises:
        Invalid: a segment's count is not a multiple of the common one.
    """
    counts = [len(inner) + 1 for inner in per_segment]
    if not counts or min(counts) == 1:
        return 1, []
    common = min(counts)
    out = []
    for index, (inner, count) in enumerate(zip(per_segment, counts, strict=True)):
        if count % common:
            raise Invalid(f"points[{index}]", f"{count} points: not a multiple of {common}")
        every = count // common
        out.append([inner[j * every - 1] for j in range(1, common)])
    return common, out


def point_step(begin: int, end: int, point: int, points: int) -> int:
    """The global step after which point ``point`` of ``points`` of a segment running steps
    ``begin..end`` falls (point ``points`` is ``end``); the runtime's child repeats this rule."""
    return begin + point * (end - begin) // points


def miss_probability(segments: int, faked: int, size: int) -> Fraction:
    """P(no faked segment is sampled) when ``faked`` of the ``segments - 1`` drawn-from
    segments are faked and the final one is honest (a faked final one is always caught)."""
    pool = segments - 1
    take = min(size, pool)
    if faked <= 0:
        return Fraction(1)
    if faked > pool:
        return Fraction(0)
    return Fraction(comb(pool - faked, take), comb(pool, take))


def detection_probability(
    segments: int, fraction: Fraction, size: int, points: int = 1
) -> Fraction:
    """P(detect) when at least ``fraction`` of the segments are faked (worst case: the final
    one is honest, the faked ones as few as the fraction allows); with ``points`` > 1, when
    the sentry replays to a drawn point (the bound in the module's docstring)."""
    if points == 1:
        return 1 - miss_probability(segments, ceil(fraction * segments), size)
    if fraction <= 0:
        return Fraction(0)
    share = fraction * segments / (segments - 1) if segments > 1 else Fraction(1)
    if share >= 1:
        return Fraction(1)  # more than the non-final segments: the final one is faked
    return 1 - (1 - share) ** min(size, segments - 1)


def size_for(segments: int, fraction: Fraction, target: Fraction, points: int = 1) -> int:
    """The least sample size that detects ``fraction`` faked with probability >= ``target``."""
    for size in range(0, segments):
        if detection_probability(segments, fraction, size, points) >= target:
            return size
    return max(0, segments - 1)


def guarantee(
    kind: str, segments: int, size: int, fraction: Fraction = Fraction(1, 4), first: int = 0
) -> str:
    """The sentence ``job status`` shows, e.g.
    ``exec: 1 of 1 segments re-executed, P(detect 25 % faked) >= 100 %``, or for a kind with
    points ``train: 17 of 512 segments re-executed, 16 of them up to a drawn point,
    P(detect 25 % faked) >= 99 %``; for an attempt resumed at ``first`` it names the attested
    range and what it leaves out."""
    attested = segments - first
    points = POINTS.get(kind, 1) if uses_points(attested, size) else 1
    checked = min(size, attested - 1) + 1
    p = detection_probability(attested, fraction, size, points)
    percent = int(p * 100)  # floor: the figure is a guarantee, never rounded up
    what = (
        f"{checked} of {segments} segments"
        if first == 0
        else (f"{checked} of segments {first}..{segments - 1}")
    )
    what += " re-executed"
    if points > 1 and checked > 1:
        what += f", {checked - 1} of them up to a drawn point"
    if first:
        what += (
            f" (resumed at {first}: 0..{first - 1} ran on an earlier worker and are not re-checked)"
        )
    return f"{kind}: {what}, P(detect {int(fraction * 100)} % faked) >= {percent} %"
