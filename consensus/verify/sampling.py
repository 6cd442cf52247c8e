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


def detection_probability(segments: int, fraction: Fraction, size: int) -> Fraction:
    """P(detect) when at least ``fraction`` of the segments are faked (worst case: the final
    one is honest, the faked ones as few as the fraction allows)."""
    faked = ceil(fraction * segments)
    return 1 - miss_probability(segments, faked, size)


def size_for(segments: int, fraction: Fraction, target: Fraction) -> int:
    """The least sample size that detects ``fraction`` faked with probability >= ``target``."""
    for size in range(0, segments):
        if detection_probability(segments, fraction, size) >= target:
            return size
    return max(0, segments - 1)


def guarantee(
    kind: str, segments: int, size: int, fraction: Fraction = Fraction(1, 4), first: int = 0
) -> str:
    """The sentence ``job status`` shows, e.g.
    ``train: 17 of 512 segments re-executed, P(detect 25 % faked) >= 99 %``; for an attempt
    resumed at ``first`` it names the attested range and what it leaves out."""
    attested = segments - first
    checked = min(size, attested - 1) + 1
    p = detection_probability(attested, fraction, size)
    percent = int(p * 100)  # floor: the figure is a guarantee, never rounded up
    if first == 0:
        what = f"{checked} of {segments} segments re-executed"
    else:
        what = (
            f"{checked} of segments {first}..{segments - 1} re-executed (resumed at {first}: "
            f"0..{first - 1} ran on an earlier worker and are not re-checked)"
        )
    return f"{kind}: {what}, P(detect {int(fraction * 100)} % faked) >= {percent} %"
