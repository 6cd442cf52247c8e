"""Metering: vouchers never exceed the budget, and a worker's exposure stays bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.market.meter import (
    MeterGuard,
    Pause,
    Resume,
    Stop,
    owed_wei,
    payable_after_failover,
)

START = 1_000_000


def guard(**kw: int) -> MeterGuard:
    args = {"rate_wei_per_s": 10, "budget_wei": 1000, "started_ms": START,
            "interval_ms": 2000, "grace_ms": 5000} | kw  # fmt: skip
    return MeterGuard(**args)


def test_owed_counts_whole_seconds_and_caps_at_the_budget() -> None:
    assert owed_wei(10, START, START + 999, 1000) == 0
    assert owed_wei(10, START, START + 2500, 1000) == 20
    assert owed_wei(10, START, START + 10**9, 1000) == 1000
    assert owed_wei(10, START, START - 5, 1000) == 0


def test_a_worker_stops_when_vouchers_stop() -> None:
    g = guard()
    assert g.on_voucher(20, START + 2000) is None
    assert g.on_tick(START + 7000) is None
    assert g.next_deadline() == START + 7001
    stop = g.on_tick(START + 7001)
    assert isinstance(stop, Stop) and "vouchers stopped" in stop.reason


def test_with_a_hold_a_worker_pauses_then_resumes_when_vouchers_come_back() -> None:
    g = guard(hold_ms=60_000)
    assert g.on_voucher(20, START + 2000) is None
    assert g.on_tick(START + 7000) is None
    pause = g.on_tick(START + 7001)
    assert isinstance(pause, Pause) and "no voucher for 5001 ms" in pause.reason
    assert g.paused and g.on_tick(START + 8000) is None, "paused once, not again every tick"
    assert g.next_deadline() == START + 2000 + 5000 + 60_000 + 1
    # The requester is back 20 s later and pays for every second since the start.
    assert g.on_voucher(owed_wei(10, START, START + 22_000, 1000), START + 22_000) == Resume()
    assert not g.paused and g.next_deadline() == START + 27_001
    assert g.on_voucher(220, START + 24_000) is None, "resumed once"


def test_a_paused_task_stops_when_its_hold_runs_out() -> None:
    g = guard(hold_ms=60_000)
    assert isinstance(g.on_tick(START + 5001), Pause)
    assert g.on_tick(START + 65_000) is None
    stop = g.on_tick(START + 65_001)
    assert isinstance(stop, Stop) and "vouchers stopped 65001 ms ago" in stop.reason


def test_a_requester_back_from_a_pause_must_still_pay_in_full() -> None:
    g = guard(hold_ms=60_000)
    assert isinstance(g.on_tick(START + 5001), Pause)
    late = g.on_voucher(20, START + 30_000)  # vouches for 2 s of 30
    assert isinstance(late, Stop) and "underpaid" in late.reason


def test_underpaying_or_decreasing_vouchers_stop_the_work() -> None:
    g = guard()
    assert g.on_voucher(50, START + 10_000) is None  # owed 30 after 7 s of slack
    assert "went down" in (g.on_voucher(40, START + 10_500) or Stop("")).reason
    g = guard()
    assert "underpaid" in (g.on_voucher(0, START + 9000) or Stop("")).reason


def test_the_budget_ends_the_work() -> None:
    assert guard().on_voucher(1000, START + 100_000) == Stop("budget exhausted")


def test_failover_pays_up_to_the_checkpoint_never_above_the_vouchers() -> None:
    assert payable_after_failover(10, 30, vouched_wei=500) == 300
    assert payable_after_failover(10, 80, vouched_wei=500) == 500


@given(st.integers(1, 10**20), st.integers(0, 10**7), st.integers(0, 10**30))
def test_owed_never_exceeds_the_budget(rate: int, elapsed_ms: int, budget: int) -> None:
    assert 0 <= owed_wei(rate, 0, elapsed_ms, budget) <= budget


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=50))
def test_an_honest_payer_is_never_stopped_before_the_budget(gaps: list[int]) -> None:
    g, now = guard(budget_wei=10**9), START
    for gap in gaps:
        now += min(gap, 2000)  # vouchers come at least every interval
        assert g.on_voucher(owed_wei(10, START, now, 10**9), now) is None
        assert g.on_tick(now) is None
