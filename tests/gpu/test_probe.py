"""The QoS probe's work: the worker's fp32 row sums against the sentry's float64 sampled rows."""

from __future__ import annotations

import random

import pytest

from gpu import probe

np = pytest.importorskip("numpy", reason="numpy is not installed (pip install '.[torch]')")
SIZE = 384
ROWS = [0, 7, 100, SIZE - 1]


def answer(seed: int = 1, scale_seed: int = 2, size: int = SIZE) -> bytes:
    sums, compute_ms = probe.prepare(seed, size).go(scale_seed)
    assert compute_ms >= 0
    return sums


def test_an_honest_answer_passes_and_binds_both_seeds() -> None:
    sums = answer()
    assert len(sums) == 4 * SIZE
    assert probe.sums_ok(sums, SIZE, probe.row_sums(1, SIZE, 2, ROWS)) == ""
    assert "row 0" in probe.sums_ok(sums, SIZE, probe.row_sums(3, SIZE, 2, ROWS))  # other inputs
    assert "row 0" in probe.sums_ok(sums, SIZE, probe.row_sums(1, SIZE, 4, ROWS))  # other scales


def test_every_row_is_checked_within_fp32_rounding() -> None:
    sums = answer(seed=9, scale_seed=10)
    assert probe.sums_ok(sums, SIZE, probe.row_sums(9, SIZE, 10, list(range(SIZE)))) == ""


def test_the_numpy_backend_gives_an_answer_that_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_torch", lambda: None)
    prepared = probe.prepare(5, 256)
    assert (prepared.backend, prepared.device) == ("numpy", "cpu")
    sums, _ = prepared.go(6)
    assert probe.sums_ok(sums, 256, probe.row_sums(5, 256, 6, ROWS[:3])) == ""


def test_half_the_rows_fail_eight_samples_nearly_always() -> None:
    """A worker that multiplied only half the rows (to look twice as fast) and made up the
    rest: eight sampled rows catch it unless all eight land in the honest half (1 in 256)."""
    sums = np.frombuffer(answer(), dtype="<f4").copy()
    sums[SIZE // 2 :] = sums[: SIZE - SIZE // 2]  # plausible numbers, wrong rows
    rng, caught = random.Random(1), 0
    for _ in range(50):
        rows = sorted(rng.sample(range(SIZE), 8))
        caught += bool(probe.sums_ok(sums.tobytes(), SIZE, probe.row_sums(1, SIZE, 2, rows)))
    assert caught >= 45


def test_lower_precision_misses_the_tolerance() -> None:
    a, b = probe.inputs(1, SIZE)
    u = probe.scales(2, SIZE)
    x = a * u
    half = x.astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32)
    sums = np.square(half).sum(axis=1, dtype=np.float32).astype("<f4").tobytes()
    assert probe.sums_ok(sums, SIZE, probe.row_sums(1, SIZE, 2, ROWS)) != ""


def test_a_wrong_length_or_nan_fails() -> None:
    expected = probe.row_sums(1, SIZE, 2, ROWS)
    assert "bytes of row sums" in probe.sums_ok(answer()[:-4], SIZE, expected)
    nan = np.full(SIZE, np.nan, dtype="<f4").tobytes()
    assert probe.sums_ok(nan, SIZE, expected) != ""
