"""The worker's dataset cache: what goes to make room, and what never does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.transfer.eviction import Cached, to_evict
from consensus.transfer.manifest import Chunk, File, Manifest
from node.market.datasets import NoRoom, room_needed

NOW, KEEP = 10_000_000, 3_600_000
OLD, OLDER, RECENT = b"o" * 32, b"r" * 32, b"n" * 32


def cache() -> list[Cached]:
    return [
        Cached(OLD, NOW - KEEP - 5, 100),
        Cached(OLDER, NOW - KEEP - 50, 100),
        Cached(RECENT, NOW - KEEP + 1, 1000),  # a sentry may still fetch it
    ]


def evict(needed: int, busy: frozenset[bytes] = frozenset()) -> list[bytes]:
    return to_evict(cache(), needed=needed, busy=busy, now_ms=NOW, keep_ms=KEEP)


def test_the_oldest_use_goes_first_and_only_as_much_as_is_needed() -> None:
    assert evict(1) == [OLDER]
    assert evict(100) == [OLDER]
    assert evict(101) == [OLDER, OLD]


def test_a_recent_or_running_tasks_dataset_stays_and_nothing_goes_in_vain() -> None:
    assert evict(201) == []  # only RECENT would make it fit: keep everything
    assert evict(1, busy=frozenset({OLDER})) == [OLD]
    assert evict(0) == []


@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=2), st.integers(0, NOW), st.integers(0, 500)),
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 3000),
    st.sets(st.binary(min_size=1, max_size=2)),
)
def test_what_goes_is_idle_and_covers_the_need_or_nothing_goes(
    rows: list[tuple[bytes, int, int]], needed: int, busy: set[bytes]
) -> None:
    cached = [Cached(i, used, size) for i, used, size in rows]
    chosen = to_evict(cached, needed=needed, busy=frozenset(busy), now_ms=NOW, keep_ms=KEEP)
    by_id = {c.dataset_id: c for c in cached}
    idle = [c for c in cached if c.dataset_id not in busy and NOW - c.used_ms >= KEEP]
    if chosen:
        assert sum(by_id[i].size for i in chosen) >= needed > 0
        assert all(by_id[i] in idle for i in chosen)
        assert sum(by_id[i].size for i in chosen[:-1]) < needed  # no more than needed
        left = [c for c in idle if c.dataset_id not in chosen]
        assert all(c.used_ms >= by_id[chosen[-1]].used_ms for c in left)  # oldest first
    else:
        assert needed <= 0 or sum(c.size for c in idle) < needed


def test_placing_takes_the_files_and_the_chunks_not_held_yet() -> None:
    a, b = Chunk(b"a" * 32, 700), Chunk(b"b" * 32, 300)
    manifest = Manifest((a, b), (File("x", 0o644, 600, 0), File("y", 0o644, 400, 600)))
    assert room_needed(manifest, lambda _digest: False) == 1000 + 1000
    assert room_needed(manifest, lambda digest: digest == a.hash.hex()) == 1000 + 300
    assert issubclass(NoRoom, OSError)  # a worker stops the task (ours), a sentry abstains
