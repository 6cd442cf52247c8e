"""Per-second metering: the requester pays as the work runs, the worker pauses if payment stops.

While a task runs, the requester signs a cumulative :class:`~consensus.market.messages.Voucher`
every ``interval_ms``: ``rate x whole seconds since the task started``, capped at the task's
budget. Cumulative means only the latest voucher matters and a lost one costs nothing.

The worker keeps a :class:`MeterGuard` per task::

    event                                             effect
    ------------------------------------------------  -------------------------------------
    voucher for at least what is owed, minus one       (accepted; remembered as the latest)
      interval of slack
      ... while paused                                 Resume
    voucher below that                                 Stop("underpaid: ...")
    voucher lower than an earlier one                  Stop("voucher went down")
    tick, no voucher for grace_ms                      Pause("no voucher for ...")
    tick, no voucher for grace_ms + hold_ms            Stop("vouchers stopped ...")
    the budget is used up                              Stop("budget exhausted")

So a worker's unpaid work is bounded by ``rate x (grace + interval)``, a few seconds: paused,
it computes nothing. Pausing rather than stopping keeps the work of a task whose requester
restarts (the usual reason vouchers stop); a requester that comes back within the hold pays
for the pause too (a voucher covers all the seconds since the start: the GPU was kept for it).

After a failover the first worker is owed only the seconds up to its last checkpoint that the
requester holds (:func:`payable_after_failover`): work after it must be redone elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass


def owed_wei(rate_wei_per_s: int, started_ms: int, now_ms: int, budget_wei: int) -> int:
    """What ``now_ms - started_ms`` of work at ``rate_wei_per_s`` costs, in whole seconds."""
    seconds = max(0, now_ms - started_ms) // 1000
    return min(budget_wei, rate_wei_per_s * seconds)


def payable_after_failover(rate_wei_per_s: int, checkpoint_seconds: int, vouched_wei: int) -> int:
    """The lost worker's due: seconds up to its last held checkpoint, never above its vouchers."""
    return min(vouched_wei, rate_wei_per_s * max(0, checkpoint_seconds))


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass(frozen=True)
class Pause:
    reason: str


@dataclass(frozen=True)
class Resume:
    pass


@dataclass
class MeterGuard:
    """The worker's side of one task's metering. Time is passed in.

    Args:
        rate_wei_per_s: the agreed price times the GPUs.
        budget_wei: the task's budget; vouchers never exceed it.
        started_ms: when the worker started the task (its own clock).
        interval_ms: how often vouchers come.
        grace_ms: how long without a voucher before the worker pauses the task.
        hold_ms: how long the worker then keeps the paused task for its requester before it
            stops it; 0 stops it at once.
    """

    rate_wei_per_s: int
    budget_wei: int
    started_ms: int
    interval_ms: int
    grace_ms: int
    hold_ms: int = 0
    latest_wei: int = 0
    latest_at_ms: int = -1
    paused: bool = False

    def __post_init__(self) -> None:
        if self.latest_at_ms < 0:
            self.latest_at_ms = self.started_ms

    def on_voucher(self, amount_wei: int, now_ms: int) -> Stop | Resume | None:
        if amount_wei < self.latest_wei:
            return Stop(f"voucher went down from {self.latest_wei} to {amount_wei} wei")
        slack = self.interval_ms + self.grace_ms
        owed = owed_wei(self.rate_wei_per_s, self.started_ms + slack, now_ms, self.budget_wei)
        if amount_wei < owed:
            return Stop(f"underpaid: {amount_wei} wei vouched, {owed} owed")
        self.latest_wei, self.latest_at_ms = amount_wei, now_ms
        if amount_wei >= self.budget_wei:
            return Stop("budget exhausted")
        if self.paused:
            self.paused = False
            return Resume()
        return None

    def on_tick(self, now_ms: int) -> Stop | Pause | None:
        silent = now_ms - self.latest_at_ms
        if silent > self.grace_ms + self.hold_ms:
            return Stop(f"vouchers stopped {silent} ms ago")
        if silent > self.grace_ms and not self.paused:
            self.paused = True
            return Pause(f"no voucher for {silent} ms")
        return None

    def next_deadline(self) -> int:
        return self.latest_at_ms + self.grace_ms + (self.hold_ms if self.paused else 0) + 1

    def exposure_wei(self) -> int:
        """The most this worker can go unpaid: the grace period and one interval of work."""
        return self.rate_wei_per_s * ((self.grace_ms + self.interval_ms) // 1000 + 1)
