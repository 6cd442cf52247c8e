"""Forgetting by age: what a service keeps per key, stamped with a time, the oldest first."""

from __future__ import annotations

import itertools
from typing import TypeVar

K = TypeVar("K")


def drop_before(kept: dict[K, int], horizon: int) -> list[K]:
    """Removes the first entries of ``kept`` stamped before ``horizon``; returns their keys.

    ``kept`` is in insertion order and its owner inserts (or moves to the end) each key as it
    stamps it, so the entries to forget come first: the scan stops at the first recent one,
    and a call costs what it forgets, not what is kept.
    """
    old = list(itertools.takewhile(lambda key: kept[key] < horizon, kept))
    for key in old:
        del kept[key]
    return old
