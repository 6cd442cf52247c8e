"""Blocking peers (p2p.gate) on real libp2p hosts over 127.0.0.1: no dial, no connection, no
stream, no gossip from a blocked peer; all back once the block is lifted or runs out.

Waits are on swarm notifications and counters within ``trio.fail_after``, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.abc import INetConn, INetwork
from libp2p.peer.id import ID

from consensus.envelope import seal_body
from consensus.scores import ScoreParams
from p2p import reqresp
from p2p.gate import OPERATOR, SCORE, Block, PeerGate, QuietNotifee
from p2p.host import DialError, Host, open_host
from p2p.validation import wall_clock_ms
from tests.hostile import hostile_peer
from tests.p2p.test_gossip import PRESENCE, WIRE_PRESENCE, honest_node, link, presence

ECHO = "/idlegrid-test/echo/1"


class Watch(QuietNotifee):
    """Counts a host's connections opened and closed, with an event on every change."""

    def __init__(self) -> None:
        self.opened = self.closed = 0
        self.changed = trio.Event()

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.opened += 1
        self._bump()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.closed += 1
        self._bump()

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10) -> None:
        with trio.fail_after(timeout_s):
            while not predicate():
                await self.changed.wait()


@asynccontextmanager
async def watched_host() -> AsyncIterator[tuple[Host, Watch]]:
    async with open_host(os.urandom(32)) as host:
        watch = Watch()
        host.libp2p.get_network().register_notifee(watch)
        yield host, watch


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5) -> None:
    """For state that changes on a task's own clock (an expiry, a sync loop): polled."""
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.02)


def block_of(peer: str, until_ms: int | None = None, source: str = OPERATOR) -> Block:
    return Block(peer, source, wall_clock_ms(), until_ms)


def test_gate_blocks_by_source_until_expiry() -> None:
    now = [1_000]
    gate = PeerGate(lambda: now[0])
    gate.block(Block("p", OPERATOR, 1_000, None))
    gate.block(Block("p", SCORE, 1_000, 5_000))
    gate.block(Block("q", OPERATOR, 1_000, 2_000))
    assert gate.blocked_peers() == {"p", "q"} and gate.next_expiry_ms() == 2_000
    assert gate.unblock("p", OPERATOR) and gate.blocked("p"), "the score ban still holds"
    assert not gate.unblock("p", OPERATOR), "nothing left to lift"
    now[0] = 2_000
    assert not gate.blocked("q") and [b.peer_id for b in gate.expire()] == ["q"]
    now[0] = 5_000
    assert gate.blocked_peers() == set() and gate.expire()[0].source == SCORE
    assert gate.blocks() == [] and gate.next_expiry_ms() is None


async def test_blocked_peer_is_disconnected_and_never_dialled() -> None:
    async with watched_host() as (a, a_watch), watched_host() as (b, b_watch):
        await a.connect(b.addrs[0])
        await a.block(block_of(b.peer_id))
        assert b.peer_id not in a.connected_peers()
        await b_watch.until(lambda: a.peer_id not in b.connected_peers())
        with pytest.raises(DialError, match="blocked"):
            await a.connect(b.addrs[0])
        with pytest.raises(DialError):  # a stream would dial: refused as well
            await a.new_stream(b.peer_id, ECHO)
        # The library's own dials (DHT, gossipsub, auto-connector) go through the swarm.
        with pytest.raises(Exception, match="blocked"):
            await a.libp2p.get_network().dial_peer(ID.from_base58(b.peer_id))
        assert a_watch.opened == 1, "no connection was made after the block"


async def test_inbound_from_a_blocked_peer_is_closed_once_identified() -> None:
    async with watched_host() as (a, a_watch), watched_host() as (b, _):
        await a.block(block_of(b.peer_id))
        for attempt in range(1, 4):  # a blocked peer that keeps dialling gets nowhere
            with contextlib.suppress(DialError):  # closed before the dial returned, or after
                await b.connect(a.addrs[0])
            await a_watch.until(lambda: a_watch.closed >= attempt)  # noqa: B023 - awaited here
            assert b.peer_id not in a.connected_peers()
        assert a_watch.opened == a_watch.closed == 3


async def test_streams_from_a_blocked_peer_never_reach_the_handler() -> None:
    served: list[str] = []

    async def echo(peer: str, payload: object) -> object:
        served.append(peer)
        return payload

    async with watched_host() as (a, _), watched_host() as (b, _):
        reqresp.serve(a, ECHO, echo)
        await b.connect(a.addrs[0])
        assert await reqresp.request(b, a.peer_id, ECHO, "hi") == "hi"
        # The gate alone, the connection left open: the instant before the notifee closes it.
        a.gate.block(block_of(b.peer_id))
        with pytest.raises(reqresp.RequestError):
            await reqresp.request(b, a.peer_id, ECHO, "again", timeout_s=5)
        assert served == [b.peer_id]


async def test_unblock_and_expiry_let_the_peer_back() -> None:
    async with watched_host() as (a, a_watch), watched_host() as (b, _):
        await a.block(block_of(b.peer_id))
        assert a.unblock(b.peer_id, OPERATOR)
        assert await b.connect(a.addrs[0]) == a.peer_id
        await a_watch.until(lambda: b.peer_id in a.connected_peers())
        await a.block(block_of(b.peer_id, until_ms=wall_clock_ms() + 300))
        with pytest.raises(DialError):
            await a.connect(b.addrs[0])
        await eventually(lambda: not a.gate.blocked(b.peer_id))
        assert await a.connect(b.addrs[0]) == b.peer_id


async def test_gossip_follows_the_gate_both_ways() -> None:
    async with honest_node() as a, honest_node() as b:
        await link(b.host, b.gossip.pubsub, a.host)
        b_id = ID.from_base58(b.host.peer_id)
        a.host.gate.block(block_of(b.host.peer_id))  # the gate only: the link stays up
        await eventually(lambda: a.gossip.pubsub.is_peer_blacklisted(b_id))
        await b.gossip.publish(PRESENCE, seal_body(b.key, presence()))
        with trio.move_on_after(2):  # the message would arrive in ~20 ms; it must not
            msg = await a.inbox.receive()
            raise AssertionError(f"gossip from a blocked peer delivered: {msg}")
        a.host.unblock(b.host.peer_id, OPERATOR)
        await eventually(lambda: not a.gossip.pubsub.is_peer_blacklisted(b_id))


async def test_a_score_ban_is_a_block_the_operator_cannot_lift_by_mistake() -> None:
    params = ScoreParams(reject_penalty=10, ban_threshold=-30)
    async with honest_node(params) as good, hostile_peer([WIRE_PRESENCE]) as (evil, evil_pubsub, _):
        watch = Watch()
        good.host.libp2p.get_network().register_notifee(watch)
        await link(evil, evil_pubsub, good.host)
        for i in range(3):
            await evil_pubsub.publish(WIRE_PRESENCE, b"garbage %d" % i)
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.disconnected >= 1)
        assert [b.source for b in good.host.gate.blocks()] == [SCORE]
        assert not good.host.unblock(evil.peer_id, OPERATOR)
        with pytest.raises(DialError, match="blocked"):
            await good.host.connect(evil.addrs[0])
        closed = watch.closed
        with contextlib.suppress(DialError):
            await evil.connect(good.host.addrs[0])  # the banned peer comes back: refused
        await watch.until(lambda: watch.closed > closed)
        assert evil.peer_id not in good.host.connected_peers()
