"""The worker pool machine: table tests per transition, a property over random event sequences."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.envelope import open_envelope, seal_body
from consensus.errors import Invalid
from consensus.kinds import Registry, from_wire, to_wire
from consensus.pool import (
    GpuOffer,
    Pool,
    Presence,
    PresenceSeen,
    RttMeasured,
    WorkerChanged,
    WorkerForgotten,
)

OFFLINE, FORGET = 10_000, 60_000
OFFER = GpuOffer(gpu_class="rtx4090-24g", count=2, vram_mb=24_576, price_wei_per_s=10**12)


def presence(
    seq: int, status: str = "available", run: bytes = b"r" * 8, exp: int = 10**9
) -> Presence:
    return Presence(
        expires_ms=exp, nonce=bytes(16), run_id=run, seq=seq, status=status,
        offers=[OFFER], capacity=2,
    )  # fmt: skip


def seen(peer: str, p: Presence) -> PresenceSeen:
    return PresenceSeen(peer, p)


def test_first_presence_adds_worker() -> None:
    pool = Pool(OFFLINE, FORGET)
    assert pool.handle(seen("A", presence(1)), 0) == [WorkerChanged("A", None, "available")]
    worker = pool.get("A")
    assert worker is not None and worker.online and worker.last_seen_ms == 0


def test_status_change_and_same_status() -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(1)), 0)
    assert pool.handle(seen("A", presence(2)), 100) == []
    assert pool.handle(seen("A", presence(3, "busy")), 200) == [
        WorkerChanged("A", "available", "busy")
    ]
    assert pool.get("A").last_seen_ms == 200  # type: ignore[union-attr]


@pytest.mark.parametrize("stale_seq", [1, 2])
def test_stale_or_replayed_seq_is_ignored(stale_seq: int) -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(2)), 0)
    assert pool.handle(seen("A", presence(stale_seq, "busy")), 500) == []
    worker = pool.get("A")
    assert worker is not None and worker.status == "available" and worker.last_seen_ms == 0


def test_one_long_silence_goes_offline_and_forgotten_in_one_tick() -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(1)), 0)
    assert pool.on_tick(FORGET) == [
        WorkerChanged("A", "available", "offline"),
        WorkerForgotten("A"),
    ]


def test_silence_makes_offline_then_forgotten() -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(1)), 0)
    assert pool.next_deadline() == OFFLINE
    assert pool.on_tick(OFFLINE - 1) == []
    assert pool.on_tick(OFFLINE) == [WorkerChanged("A", "available", "offline")]
    assert pool.next_deadline() == FORGET
    assert pool.on_tick(FORGET) == [WorkerForgotten("A")]
    assert pool.workers() == [] and pool.next_deadline() is None


def test_offline_worker_comes_back() -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(5)), 0)
    pool.on_tick(OFFLINE)
    # restarted: a new run may start its seq again from 0
    back = pool.handle(seen("A", presence(0, run=b"n" * 8)), OFFLINE + 1)
    assert back == [WorkerChanged("A", "offline", "available")]


def test_new_run_while_old_looks_alive_needs_later_expiry() -> None:
    pool = Pool(OFFLINE, FORGET)
    pool.handle(seen("A", presence(9, exp=5_000)), 0)
    assert pool.handle(seen("A", presence(0, "busy", run=b"o" * 8, exp=4_000)), 10) == []
    assert pool.handle(seen("A", presence(0, "busy", run=b"n" * 8, exp=6_000)), 20) == [
        WorkerChanged("A", "available", "busy")
    ]


def test_rtt_and_capacity_bound() -> None:
    pool = Pool(OFFLINE, FORGET, max_workers=1)
    pool.handle(seen("A", presence(1)), 0)
    assert pool.handle(seen("B", presence(1)), 0) == []  # full: new workers ignored
    pool.handle(RttMeasured("A", 12), 1)
    pool.handle(RttMeasured("B", 12), 1)  # unknown worker: nothing to update
    assert [w.peer_id for w in pool.workers()] == ["A"]
    assert pool.get("A").rtt_ms == 12  # type: ignore[union-attr]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="offline_after_ms"):
        Pool(0, 10)
    with pytest.raises(ValueError, match="offline_after_ms"):
        Pool(10, 5)


def test_presence_over_the_wire() -> None:
    key = nacl.signing.SigningKey(bytes(range(32)))
    body = presence(3, exp=2_000)
    opened = open_envelope(seal_body(key, body), 1_000, Registry([Presence]))
    assert opened.body == body
    wire = to_wire(body)
    assert wire["offers"][0]["price_wei_per_s"] == "1000000000000"  # wei travels as text
    with pytest.raises(Invalid, match="status must be one of"):
        from_wire(Presence, wire | {"status": "offline"})  # only the pool concludes offline
    with pytest.raises(Invalid, match=r"body\.offers"):
        from_wire(Presence, wire | {"offers": [{"gpu_class": "x"}]})


# --- property: whatever happens, the pool's view is consistent with the events --------------

events = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from([b"a" * 8, b"b" * 8]),  # run id: a restart changes it
        st.integers(0, 5),  # seq
        st.sampled_from(["available", "busy", "unavailable"]),
        st.integers(0, 30_000),  # time step
        st.booleans(),  # tick after?
    ),
    max_size=60,
)


@given(events)
def test_pool_invariants(steps: list[tuple[str, bytes, int, str, int, bool]]) -> None:
    """Model: a presence counts iff it is the first, from another run, or a newer seq."""
    pool = Pool(OFFLINE, FORGET)
    now = 0
    heard: dict[str, tuple[bytes, int, int, str]] = {}  # peer -> run, seq, time, status
    for peer, run, seq, status, step, tick in steps:
        now += step
        pool.on_tick(now)  # the driver ticks whenever time passes
        heard = {p: h for p, h in heard.items() if now - h[2] < FORGET}  # forgotten
        pool.handle(seen(peer, presence(seq, status, run=run)), now)
        last = heard.get(peer)
        if last is None or run != last[0] or seq > last[1]:
            heard[peer] = (run, seq, now, status)
        if tick:
            pool.on_tick(now)
        assert sorted(heard) == [w.peer_id for w in pool.workers()]
        for worker in pool.workers():
            _, _, at, reported = heard[worker.peer_id]
            assert worker.last_seen_ms == at
            expected = "offline" if now - at >= OFFLINE else reported
            assert worker.status == expected
