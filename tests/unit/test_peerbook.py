"""The peer book's redial backoff (failures and connections that do not last both slow it),
and how often it is written to sqlite."""

from __future__ import annotations

from pathlib import Path

from node.market.net import MAX_DIAL_ADDRS, dial_candidates
from node.peerbook import (
    BACKOFF_MAX_MS,
    BACKOFF_START_MS,
    FLAP_MS,
    RESAVE_MS,
    PeerBook,
    load_remembered,
    remember,
    unsaved,
)
from storage.db import Database

ADDR = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPeer"


def book_with_peer() -> tuple[PeerBook, str]:
    book = PeerBook("12D3KooWMe")
    peer = book.add_addr(ADDR)
    assert peer is not None
    return book, peer.peer_id


def test_failures_back_off_and_a_lasting_connection_resets() -> None:
    book, peer_id = book_with_peer()
    peer = book.peers[peer_id]
    book.dialed(peer, False, 0)
    book.dialed(peer, False, 1_000)
    assert peer.backoff_ms == 4 * BACKOFF_START_MS and peer.next_dial_ms == 3_000
    book.dialed(peer, True, 3_000, rtt_ms=7)
    book.lasting({peer_id}, 3_000 + FLAP_MS - 1)
    assert peer.backoff_ms == 8 * BACKOFF_START_MS, "not yet: it may still be closed at once"
    book.lasting({peer_id}, 3_000 + FLAP_MS)
    assert peer.backoff_ms == BACKOFF_START_MS and peer.next_dial_ms == 0 and peer.rtt_ms == 7


def test_a_peer_that_closes_every_connection_is_dialled_less_and_less() -> None:
    """A peer that blocks us accepts the dial and closes it: redialled every second, that
    would be a handshake a second for nothing."""
    book, peer_id = book_with_peer()
    peer = book.peers[peer_id]
    now, gaps = 0, []
    for _ in range(9):
        book.dialed(peer, True, now)
        book.lasting(set(), now + 500)  # closed at once: never seen connected
        assert book.due(peer.next_dial_ms - 1, set(), set()) == []
        gaps.append(peer.next_dial_ms - now)
        now = peer.next_dial_ms
    assert gaps == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    assert peer.backoff_ms == BACKOFF_MAX_MS


async def test_a_hello_rewrites_the_peer_row_only_when_it_changed_or_long_ago(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "node.db")
    try:
        book, peer_id = book_with_peer()
        peer = book.heard(peer_id, [ADDR], ["worker"], "1", 1_000)
        assert unsaved(peer)
        await remember(db, peer)
        assert not unsaved(book.heard(peer_id, [ADDR], ["worker"], "1", 11_000))  # a repeat
        peer = book.heard(peer_id, [ADDR], ["worker", "sentry"], "1", 12_000)
        assert unsaved(peer)  # its roles changed
        await remember(db, peer)
        assert not unsaved(book.heard(peer_id, [ADDR], ["worker", "sentry"], "1", 13_000))
        assert unsaved(book.heard(peer_id, [ADDR], ["worker", "sentry"], "1", 12_000 + RESAVE_MS))
        restarted = PeerBook("12D3KooWMe")
        assert await load_remembered(db, restarted) == 1
        assert restarted.peers[peer_id].addrs == [ADDR]
    finally:
        await db.close()


def test_a_peer_is_dialled_at_the_given_addresses_then_at_those_it_announced() -> None:
    book = PeerBook("me")
    them = "12D3KooWthem"
    ours, announced = f"/ip4/10.0.0.1/tcp/1/p2p/{them}", f"/ip4/10.0.0.2/tcp/2/p2p/{them}"
    assert dial_candidates(them, [], book) == []  # unknown: nowhere to dial
    book.heard(them, [announced, "/ip4/10.0.0.3/tcp/3/p2p/someone-else"], [], "v", 1)
    assert dial_candidates(them, [], book) == [announced]  # heard on gossip, not connected
    assert dial_candidates(them, [ours, announced, "/ip4/1.1.1.1/tcp/4"], book) == [
        ours, announced,
    ]  # fmt: skip


def test_at_most_a_few_addresses_of_one_peer_are_dialled() -> None:
    book = PeerBook("me")
    them = "12D3KooWthem"
    many = [f"/ip4/10.0.0.{i}/tcp/1/p2p/{them}" for i in range(3 * MAX_DIAL_ADDRS)]
    book.heard(them, many, [], "v", 1)
    assert dial_candidates(them, [], book) == many[:MAX_DIAL_ADDRS]
