"""``GET /v1/debug/memory``: what a long-running daemon holds, for finding what grows.

A node runs for weeks; when its memory grows, the question is what. This answers it on the
running process, behind the API token like every other route: the resident size, the live
Python objects counted by type, and, when the daemon was started with Python's allocation
tracing on (``PYTHONTRACEMALLOC=5 idlegrid node start``; it slows the node), the source lines
that hold the most memory. Two readings some minutes apart, compared, show what grows.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from node.api import Handler, Request

TOP = 30


def memory_routes() -> dict[tuple[str, str], Handler]:
    async def memory(_: Request) -> Any:
        return memory_view()

    return {("GET", "/v1/debug/memory"): memory}


def memory_view(top: int = TOP) -> dict[str, Any]:
    """The resident size, the ``top`` object types by count and, if tracing, the ``top``
    allocation sites by size."""
    gc.collect()  # what is garbage now is not what grows
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    view: dict[str, Any] = {
        "rss_kib": _rss_kib(),
        "objects": sum(types.values()),
        "types": [{"type": t, "count": n} for t, n in types.most_common(top)],
        "tracing": tracemalloc.is_tracing(),
        "sites": [],
    }
    if tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")[:top]
        view["sites"] = [
            {"site": str(s.traceback[0]), "kib": s.size // 1024, "count": s.count} for s in stats
        ]
    return view


def _rss_kib() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) if "VmRSS" in fields else None
