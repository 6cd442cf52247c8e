"""When a sentry probes which worker: random times with a given mean, under a given clock."""

from __future__ import annotations

import random
import statistics

import pytest

from consensus.verify.qos_schedule import BUSY_DIVISOR, CAP, ProbeSchedule

MEAN = 10_000


def schedule(seed: int = 1) -> ProbeSchedule:
    return ProbeSchedule(MEAN, random.Random(seed))


def test_nothing_is_due_before_its_time_and_the_longest_overdue_goes_first() -> None:
    s = schedule()
    s.sync({"a", "b", "c"}, now_ms=0)
    first = s.next_deadline()
    assert first is not None and 0 < first <= CAP * MEAN
    assert s.due(first - 1) is None
    assert s.due(first) == min(s.due_ms, key=s.due_ms.__getitem__)
    assert s.due(10 * CAP * MEAN) == min(s.due_ms, key=s.due_ms.__getitem__)


def test_a_probed_worker_waits_a_fresh_draw_and_a_busy_one_less() -> None:
    s = schedule()
    s.sync({"a"}, now_ms=0)
    s.probed("a", now_ms=50_000)
    assert 50_000 < s.due_ms["a"] <= 50_000 + CAP * MEAN
    busy = [schedule(seed) for seed in range(200)]
    free = [schedule(seed) for seed in range(200)]
    for b, f in zip(busy, free, strict=True):
        b.sync({"a"}, 0), f.sync({"a"}, 0)
        b.probed("a", 0, busy=True), f.probed("a", 0)
    assert all(b.due_ms["a"] <= CAP * MEAN // BUSY_DIVISOR for b in busy)
    assert statistics.mean(b.due_ms["a"] for b in busy) < statistics.mean(
        f.due_ms["a"] for f in free
    )


def test_gaps_are_random_with_the_configured_mean() -> None:
    s = schedule(7)
    gaps = [s.draw_ms() for _ in range(4000)]
    assert 0.9 * MEAN < statistics.mean(gaps) < 1.05 * MEAN  # exponential, capped at 4 means
    assert min(gaps) >= 1 and max(gaps) <= CAP * MEAN
    assert len(set(gaps)) > 3000  # not a fixed period a worker could be honest on


def test_workers_that_leave_are_forgotten_and_new_ones_scheduled() -> None:
    s = schedule()
    s.sync({"a", "b"}, now_ms=0)
    s.sync({"b", "c"}, now_ms=100)
    assert set(s.due_ms) == {"b", "c"} and s.due_ms["c"] > 100
    s.probed("a", now_ms=200)  # left while being probed: not brought back
    assert "a" not in s.due_ms
    s.sync(set(), now_ms=300)
    assert s.next_deadline() is None and s.due(10**9) is None


def test_the_same_seed_gives_the_same_plan() -> None:
    plans = []
    for _ in range(2):
        s = schedule(3)
        s.sync({"x", "y", "z"}, 0)
        plans.append(dict(s.due_ms))
    assert plans[0] == plans[1]


def test_a_zero_mean_is_refused() -> None:
    with pytest.raises(ValueError, match="mean_ms"):
        ProbeSchedule(0, random.Random(1))
