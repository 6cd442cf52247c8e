"""Chunk layout and the multi-source schedule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.transfer.plan import plan_layout
from consensus.transfer.schedule import NoSourceLeft, Schedule

files_st = st.dictionaries(
    st.text("abcdef/", min_size=1, max_size=6), st.integers(0, 5000), max_size=30
).map(lambda d: list(d.items()))


@settings(max_examples=200, deadline=None)
@given(files_st, st.integers(64, 2048), st.integers(0, 64))
def test_layout_covers_each_file_once(files: list[tuple[str, int]], chunk: int, pack: int) -> None:
    layout = plan_layout(files, chunk, pack)
    covered = {i: 0 for i in range(len(files))}
    stream = 0
    for pieces in layout.chunks:
        size = sum(p.length for p in pieces)
        assert 0 < size <= chunk
        for p in pieces:
            assert layout.starts[p.file] + p.offset == stream  # the stream order is the layout
            covered[p.file] += p.length
            stream += p.length
    assert covered == {i: size for i, (_, size) in enumerate(files)}


def test_a_grown_big_file_moves_only_its_chunks() -> None:
    before = plan_layout([("a", 3000), ("b", 3000), ("s1", 10), ("s2", 10)], 1024, 100)
    after = plan_layout([("a", 3100), ("b", 3000), ("s1", 10), ("s2", 10)], 1024, 100)
    # b's chunks keep their pieces (offsets within b), and the small files still pack alike
    assert before.chunks[3:6] == after.chunks[4:7]
    assert before.chunks[-1] == after.chunks[-1]


def test_schedule_moves_work_away_from_a_corrupt_source() -> None:
    s = Schedule.of([0, 1, 2], ["good", "bad"])
    assert s.assign("bad") == 0
    assert s.assign("good") == 1
    s.failed(0, "bad", corrupt=True)
    assert s.assign("bad") is None  # banned
    assert s.assign("good") == 0
    s.done(1, "good", 10, 5)
    s.done(0, "good", 10, 5)
    assert s.assign("good") == 2
    s.done(2, "good", 10, 5)
    assert s.finished
    assert s.sources["bad"].corrupt == 1 and s.sources["good"].chunks == 3
    with pytest.raises(ValueError, match="not assigned"):
        s.done(2, "good", 1, 1)


def test_schedule_gives_up_when_every_source_failed_a_chunk() -> None:
    s = Schedule.of([0], ["a", "b"])
    s.failed(s.assign("a") or 0, "a", corrupt=False)
    assert s.assign("a") is None
    s.failed(s.assign("b") or 0, "b", corrupt=False)
    with pytest.raises(NoSourceLeft):
        s.assign("b")


def test_release_requeues_untried() -> None:
    s = Schedule.of([0, 1], ["a", "b"])
    assert s.assign("a") == 0
    s.release("a")
    assert s.assign("b") == 0
