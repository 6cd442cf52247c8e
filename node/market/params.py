"""Timings of the market, in one place: shortened by tests, left alone by operators."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarketParams:
    bid_window_ms: int = 2_000  # longest a demand collects bids
    confirm_timeout_ms: int = 3_000  # how long a winner has to accept the order
    voucher_interval_ms: int = 2_000  # a voucher (and a progress report) this often
    voucher_grace_ms: int = 10_000  # a worker pauses after this long without a voucher
    voucher_hold_ms: int = 120_000  # ... and stops a task paused this long (the worker's own)
    lost_after_ms: int = 8_000  # no report for this long: the worker is gone, fail over
    no_bids_retry_ms: int = 5_000  # wait before auctioning again after no bids
    max_attempts: int = 10  # reassignments before a task fails
    demand_ttl_ms: int = 60_000  # how long a demand envelope stays valid
