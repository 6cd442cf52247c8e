"""Round-trip times by ping: measured for peers that dialled us too, shown in the order book."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from node.peerbook import Peer, PeerBook
from node.rtt import smoothed
from tests.inprocess import start_node

pytestmark = pytest.mark.slow


async def test_a_peer_that_dialled_us_gets_a_measured_round_trip(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first = await start_node(nursery, tmp_path / "a", roles=("worker",), rtt_interval_s=1)
        second = await start_node(
            nursery, tmp_path / "b", roles=("worker",), bootstrap=first, rtt_interval_s=1
        )
        assert first.network is not None and second.network is not None
        theirs = second.keys.peer_id
        with trio.fail_after(30):  # a few ping rounds, and b's presence heard
            while not (
                (peer := first.network.book.peers.get(theirs)) is not None
                and peer.pinged
                and any(w["peer_id"] == theirs for w in first.network.market_view())
            ):
                await first.network.rtt_measured.wait()
        rtt = peer.rtt_ms
        assert rtt is not None and 1 <= rtt < 1000  # one process, loopback
        [worker] = [w for w in first.network.market_view() if w["peer_id"] == theirs]
        assert worker["rtt_ms"] == rtt
        [row] = [p for p in first.network.peers_view() if p["peer_id"] == theirs]
        assert row["rtt_ms"] == rtt
        nursery.cancel_scope.cancel()


def test_the_first_ping_replaces_a_dial_time_and_later_ones_are_averaged() -> None:
    assert smoothed(None, 7, fresh=True) == 7
    assert smoothed(250, 7, fresh=True) == 7  # a dial's several round trips are not one
    assert smoothed(8, 12, fresh=False) == 9  # a quarter of the way to the new sample
    assert smoothed(100, 4, fresh=False) == 76


def test_a_redial_does_not_overwrite_a_pinged_round_trip() -> None:
    book = PeerBook("me")
    peer = book.peers.setdefault("them", Peer("them", ["/ip4/127.0.0.1/tcp/1/p2p/them"]))
    book.dialed(peer, ok=True, now_ms=1, rtt_ms=240)
    assert peer.rtt_ms == 240
    peer.rtt_ms, peer.pinged = 3, True
    book.dialed(peer, ok=True, now_ms=2, rtt_ms=260)
    assert peer.rtt_ms == 3
