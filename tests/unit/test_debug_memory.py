"""The memory reading a node's operator asks for: resident size, live objects by type and, with
allocation tracing on, the lines that hold the most."""

from __future__ import annotations

import tracemalloc

from node.cli import _human_memory
from node.debug_memory import memory_view


class Grows:
    """A type of ours, made many times below, so it must top the count."""


def test_the_reading_counts_objects_by_type_and_names_the_lines_when_tracing() -> None:
    kept = [Grows() for _ in range(200_000)]
    tracemalloc.start(1)
    try:
        more = [bytes(1000) for _ in range(2000)]  # about 2 MB from one line here
        view = memory_view()
    finally:
        tracemalloc.stop()
    assert view["rss_kib"] > 0
    assert {"type": "Grows", "count": 200_000} in view["types"]
    assert view["tracing"] is True
    assert __file__ in view["sites"][0]["site"] and view["sites"][0]["kib"] >= 1900
    assert len(kept) + len(more) and not memory_view()["sites"], "no tracing: no sites"


def test_node_memory_prints_the_reading_and_says_how_to_see_lines() -> None:
    view = {"rss_kib": 2048, "objects": 7, "types": [{"type": "dict", "count": 5}],
            "tracing": False, "sites": []}  # fmt: skip
    text = _human_memory(view)
    assert text.startswith("resident 2.0 MiB, 7 Python objects")
    assert ["5", "dict"] in [line.split() for line in text.splitlines()]
    assert "PYTHONTRACEMALLOC=5" in text
    view["sites"] = [{"site": "node/x.py:3", "kib": 900, "count": 12}]
    assert "node/x.py:3" in _human_memory(view)
