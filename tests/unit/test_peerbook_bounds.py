"""The peer book's bounds: peer ids are free, so hellos from fresh keys must not grow it (or
its sqlite table) without end, and a peer long silent stops being redialled. Connected and
bootstrap peers are never forgotten, nor peers silent only while we reached no one.

The clock is the ``now_ms`` each call is given, as the dial loop and gossip give it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node import peerbook
from node.peerbook import SWEEP_MS, PeerBook, load_remembered, remember
from storage.db import Database

T0 = 1_000_000_000
FORGET_MS = 10 * SWEEP_MS
BOOT = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWBoot"


def addr(peer_id: str) -> str:
    return f"/ip4/10.0.0.2/tcp/4001/p2p/{peer_id}"


def hello(book: PeerBook, peer_id: str, now_ms: int) -> None:
    book.heard(peer_id, [addr(peer_id)], ["worker"], "1", now_ms)


def test_hellos_from_fresh_keys_are_capped_oldest_first_sparing_connected_and_bootstrap() -> None:
    book = PeerBook("me", [BOOT], max_peers=64)
    hello(book, "friend", T0)  # heard once, long ago, but connected since
    book.lasting({"friend"}, T0)
    fresh = [f"sybil{i:04}" for i in range(1_000)]
    for i, peer_id in enumerate(fresh):
        hello(book, peer_id, T0 + 1 + i)
        assert len(book.peers) <= 64
    assert {"friend", "12D3KooWBoot"} <= book.peers.keys()
    kept = book.peers.keys() - {"friend", "12D3KooWBoot"}
    assert kept == set(fresh[-len(kept) :]), "the longest unheard went first"
    assert len(kept) >= 64 - 64 // 16 - 2


def test_a_peer_silent_and_unconnected_for_the_horizon_is_forgotten_and_not_redialled() -> None:
    book = PeerBook("me", [BOOT], forget_after_ms=FORGET_MS)
    hello(book, "friend", T0)
    hello(book, "quiet", T0)
    book.add_addr(addr("from-dht"))  # learned, never heard: its grace starts at the next tick
    book.lasting({"friend"}, T0)
    now = T0
    while now < T0 + FORGET_MS - SWEEP_MS:
        now += SWEEP_MS
        hello(book, "chatty", now)
        book.lasting({"friend"}, now)
        assert {"quiet", "from-dht"} <= book.peers.keys(), "within the horizon: kept"
    book.lasting({"friend"}, T0 + FORGET_MS)
    assert book.peers.keys() == {"friend", "chatty", "12D3KooWBoot"}
    assert [p.peer_id for p in book.due(T0 + FORGET_MS, {"friend"}, set())] == [
        "12D3KooWBoot",
        "chatty",
    ]
    hello(book, "quiet", T0 + FORGET_MS + 1)  # back: known again
    assert "quiet" in book.peers


def test_time_in_which_we_reached_no_one_does_not_count_against_peers() -> None:
    """Our own network outage looks like every peer going silent."""
    book = PeerBook("me", forget_after_ms=FORGET_MS)
    hello(book, "quiet", T0)
    for now in range(T0, T0 + 3 * FORGET_MS, SWEEP_MS):
        book.lasting(set(), now)
    back = T0 + 3 * FORGET_MS
    book.lasting({"friend"}, back)  # reachable again
    book.lasting({"friend"}, back + FORGET_MS - 2 * SWEEP_MS)
    assert "quiet" in book.peers, "its grace began when we could reach peers again (a tick)"
    book.lasting({"friend"}, back + FORGET_MS)
    assert "quiet" not in book.peers


async def test_the_peer_table_keeps_only_the_rows_a_restart_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peerbook, "REMEMBER_MAX", 3)
    book = PeerBook("me")
    async with await Database.open(tmp_path / "node.db") as db:
        for i in range(6):
            hello(book, f"p{i}", T0 + i)
            await remember(db, book.peers[f"p{i}"])
        rows = await db.query("SELECT peer_id FROM peers ORDER BY peer_id")
        assert [r["peer_id"] for r in rows] == ["p3", "p4", "p5"]
        restarted = PeerBook("me")
        assert await load_remembered(db, restarted) == 3
        assert restarted.peers.keys() == {"p3", "p4", "p5"}
