"""Which datasets a worker deletes to make room for a task's data.

A worker keeps the datasets it fetched for tasks, so its next task on the same data moves
nothing. Kept forever they would fill its disk and it would stop bidding on data jobs, so
when a task's data does not fit they go, by this rule::

    a cached dataset is                        outcome
    -----------------------------------------  ------------------------------------------
    named by a task running here               kept (the task reads it)
    used by a task within ``keep_ms``          kept (a sentry checking that task fetches
                                               it from us; gone, the honest worker fails)
    otherwise                                  a candidate, the oldest use first

Candidates are taken until their bytes cover the shortfall. If all of them would not, none
is taken: deleting data for a task that still would not fit only costs the next task a
fetch. Datasets the operator added or fetched are never in the cache. Apart from room, a
dataset unused for longer than the node's expiry goes (:func:`idle` with that period): other
people's data is not kept for ever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Cached:
    dataset_id: bytes
    used_ms: int  # when a task last used it
    size: int  # bytes its deletion frees at most (shared chunks stay)


def to_evict(
    cached: Iterable[Cached], *, needed: int, busy: frozenset[bytes], now_ms: int, keep_ms: int
) -> list[bytes]:
    """The datasets to delete, oldest use first, to free ``needed`` bytes; [] if none or if
    every candidate together would not free that much."""
    if needed <= 0:
        return []
    chosen, freed = [], 0
    for entry in idle(cached, busy=busy, now_ms=now_ms, keep_ms=keep_ms):
        chosen.append(entry.dataset_id)
        freed += entry.size
        if freed >= needed:
            return chosen
    return []


def idle(
    cached: Iterable[Cached], *, busy: frozenset[bytes], now_ms: int, keep_ms: int
) -> list[Cached]:
    """The cached datasets no running task reads and none used for ``keep_ms``, oldest use
    first."""
    return sorted(
        (c for c in cached if c.dataset_id not in busy and now_ms - c.used_ms >= keep_ms),
        key=lambda c: (c.used_ms, c.dataset_id),
    )
