"""Specs that parse but will likely never finish: warned about, not refused.

Why warnings and not :class:`~consensus.market.spec.SpecError`: ``runtime.estimate_s`` is the
requester's guess for a reference worker, so a spec below it may still succeed (a fast worker,
a cheap one). But a newcomer whose deadline is shorter than the estimate, or whose budget
cannot pay the estimate at the price cap, otherwise learns it only after a charged failure or
minutes of bidding nobody answers.

The checks mirror what a worker's bidder compares (``consensus/market/bidder.py``): each task
gets ``max_total // tasks`` as its budget and ``estimate_s // tasks`` seconds as its estimate
(``node/market/tasks.py`` ``task_estimate_s``), and tasks run side by side, so the deadline
is compared with one task's share.
"""

from __future__ import annotations

from consensus.market.spec import JobSpec
from consensus.settlement.units import format_rate, format_wei

_ETH_FROM_WEI = 10**15  # from 0.001 ETH up, amounts read better in ETH than in gwei
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def spec_warnings(spec: JobSpec) -> list[str]:
    """One line per likely problem, naming the spec's keys and their values in human units."""
    return [w for w in (_deadline_warning(spec), _budget_warning(spec)) if w]


def _task_share_s(spec: JobSpec) -> int:
    return max(1, spec.runtime.estimate_s // spec.tasks)


def _estimate_text(spec: JobSpec) -> str:
    """``runtime.estimate_s 30 s``, or one task's share of it when the job has several."""
    estimate = f"runtime.estimate_s {spec.runtime.estimate_s} s"
    if spec.tasks == 1:
        return estimate
    return f"a task's share of {estimate} ({_task_share_s(spec)} s for each of {spec.tasks} tasks)"


def _deadline_warning(spec: JobSpec) -> str:
    if spec.deadline_s >= _task_share_s(spec):
        return ""
    return (
        f"budget.deadline {duration(spec.deadline_s)} is shorter than {_estimate_text(spec)}: "
        "a worker will likely be stopped at the deadline"
    )


def _budget_warning(spec: JobSpec) -> str:
    gpus = spec.requirements.gpu_count
    needed = _task_share_s(spec) * spec.max_price_wei_per_s * gpus
    budget = spec.task_budget_wei()
    if budget >= needed:
        return ""
    total = f"budget.max_total {amount(spec.max_total_wei)}"
    if spec.tasks > 1:
        total += f" ({amount(budget)} for each of {spec.tasks} tasks)"
    return (
        f"{total} is below {_estimate_text(spec)} at budget.max_price_per_s "
        f"{format_rate(spec.max_price_wei_per_s, None)} x {gpus} GPU(s) = {amount(needed)}: "
        "a worker asking the maximum price will not bid"
    )


def amount(wei: int) -> str:
    """``100 gwei``, or ``0.01 ETH`` from 0.001 ETH up: the units a spec's author writes."""
    return format_wei(wei) if wei >= _ETH_FROM_WEI else format_wei(wei, "gwei")


def duration(seconds: int) -> str:
    """``5s``, ``10m``, ``2h``: the largest unit of the spec's own that divides it evenly."""
    unit, size = next(((u, s) for u, s in _DURATION_UNITS if seconds % s == 0), ("s", 1))
    return f"{seconds // size}{unit}"
