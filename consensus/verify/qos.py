"""Honest hardware: a worker's claimed benchmark against what a sentry's challenge measured.

The sentry sends a fresh seed (:mod:`gpu.bench`); the worker must return the proof for that
seed (so it ran the work) within a time that implies its score. Timing on a busy machine is
noisy, so only a claim well above the measurement is flagged; a flagged worker is down-ranked
(its bids scored at the measured value), never slashed, since speed is not bitwise evidence.
"""

from __future__ import annotations

BENCH_TOLERANCE_PCT = 100  # claims up to 2x the measurement pass: timing on a busy machine


def benchmark_problem(claimed: int, measured: int, proof_ok: bool,
                      tolerance_pct: int = BENCH_TOLERANCE_PCT) -> str:  # fmt: skip
    """Why the claim fails, or ``""``."""
    if not proof_ok:
        return "the benchmark proof does not match the challenge seed"
    if claimed * 100 > measured * (100 + tolerance_pct):
        return f"claims score {claimed}, measured {measured} (over {tolerance_pct} % above)"
    return ""
