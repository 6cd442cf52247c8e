"""Gossip on real libp2p hosts over 127.0.0.1: delivery, each rejection, scores, bans, pacing.

The "evil" node runs py-libp2p's pubsub with no validator of its own, so it can publish
anything; every honest node must refuse it, blame it, and stay up.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import nacl.signing
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from consensus.envelope import new_nonce, seal, seal_body
from consensus.kinds import Ping, Registry
from consensus.pool import GpuOffer, Presence
from consensus.scores import PeerScores, ScoreParams
from p2p.gossip import (
    DEFAULT_NETWORK,
    Gossip,
    GossipParams,
    Message,
    SerialPubsub,
    network_of,
    open_gossip,
    topic_name,
    wire_topic,
)
from p2p.host import Host, open_host
from p2p.validation import EnvelopeValidator, wall_clock_ms
from tests.hostile import hostile_peer

PRESENCE = topic_name("presence")
WIRE_PRESENCE = wire_topic(PRESENCE, DEFAULT_NETWORK)  # what raw pubsub (a hostile peer) uses
REGISTRY = Registry([Presence, Ping])
TOPICS = {PRESENCE: frozenset({Presence.KIND})}


@dataclass
class Node:
    seed: bytes
    host: Host
    gossip: Gossip
    inbox: trio.MemoryReceiveChannel[Message]

    @property
    def key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)


@asynccontextmanager
async def honest_node(
    scores: ScoreParams | None = None, params: GossipParams | None = None
) -> AsyncIterator[Node]:
    seed = os.urandom(32)
    async with open_host(seed) as host:
        validator = EnvelopeValidator(REGISTRY, TOPICS)
        scores_kept = PeerScores(scores or ScoreParams())
        async with open_gossip(host, validator, scores_kept, params or GossipParams()) as gossip:
            inbox = await gossip.subscribe(PRESENCE)
            yield Node(seed, host, gossip, inbox)


def presence(seq: int = 1, expires_in_ms: int = 60_000) -> Presence:
    offer = GpuOffer(gpu_class="cpu", count=1, vram_mb=0, price_wei_per_s=1000)
    return Presence(
        expires_ms=wall_clock_ms() + expires_in_ms, nonce=new_nonce(), run_id=b"run-0001",
        seq=seq, status="available", offers=[offer], capacity=1,
    )  # fmt: skip


async def link(a: Host, pubsub_a: Pubsub, b: Host) -> None:
    """Connects a to b and waits until b is in a's presence mesh (no sleeps).

    Publishing to a joined topic goes to mesh peers only, and the mesh is grafted on the next
    heartbeat: a message published before that reaches nobody.
    """
    await a.connect(b.addrs[0])
    await pubsub_a.wait_for_subscription(ID.from_base58(b.peer_id), WIRE_PRESENCE, timeout=10)
    await pubsub_a.wait_for_mesh(ID.from_base58(b.peer_id), WIRE_PRESENCE, timeout=10)


async def next_message(node: Node, timeout: float = 10) -> Message:
    with trio.fail_after(timeout):
        return await node.inbox.receive()


def test_the_network_goes_into_topics_on_the_wire_only() -> None:
    assert wire_topic(topic_name("jobs", "cpu"), "test-1") == "/idlegrid/1/test-1/jobs/cpu"
    assert network_of(wire_topic(PRESENCE, "main")) == "main"
    assert network_of(PRESENCE) is None  # no network segment: a bare name
    assert network_of("/meshsub-other/x") is None
    with pytest.raises(ValueError, match="does not start with '/idlegrid/1/'"):
        wire_topic("/other/presence", "main")


async def test_presence_crosses_a_line_of_three() -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(honest_node()) for _ in range(3)]
        await link(a.host, a.gossip.pubsub, b.host)
        await link(c.host, c.gossip.pubsub, b.host)
        await b.gossip.pubsub.wait_for_subscription(
            ID.from_base58(c.host.peer_id), WIRE_PRESENCE, 10
        )
        await b.gossip.pubsub.wait_for_mesh(ID.from_base58(c.host.peer_id), WIRE_PRESENCE, 10)
        body = presence()
        await a.gossip.publish(PRESENCE, seal_body(a.key, body))
        got = await next_message(c)
        assert got.origin == a.host.peer_id
        assert got.opened.body == body
        own = await next_message(a)  # a node sees its own publishes too
        assert own.opened.body == body


BAD_CASES = {
    "garbage": lambda key: b"\x93not an envelope",
    "wrong kind for topic": lambda key: seal(
        key, Ping.KIND, {"expires_ms": wall_clock_ms() + 60_000, "nonce": new_nonce(), "seq": 1}
    ),
    "too far in the future": lambda key: seal_body(key, presence(expires_in_ms=2 * 3_600_000)),
    "oversized": lambda key: seal_body(key, presence()) + bytes(70 * 1024),
    "forged": lambda key: seal_body(nacl.signing.SigningKey.generate(), presence()),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CASES))
async def test_bad_messages_are_rejected_and_blamed(case: str) -> None:
    async with honest_node() as good, hostile_peer([WIRE_PRESENCE]) as (evil, evil_pubsub, _):
        await link(evil, evil_pubsub, good.host)
        # "forged" is a valid envelope signed by someone else: its signer is not the origin
        await evil_pubsub.publish(
            WIRE_PRESENCE, BAD_CASES[case](nacl.signing.SigningKey(os.urandom(32)))
        )
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.rejected >= 1)
        assert good.gossip.scores.score(evil.peer_id, wall_clock_ms()) < 0
        assert good.gossip.stats.accepted == 0
        assert good.inbox.statistics().current_buffer_used == 0  # nothing was delivered


async def test_replay_is_ignored_without_blame() -> None:
    async with (
        honest_node() as good,
        hostile_peer([WIRE_PRESENCE]) as (evil, evil_pubsub, evil_key),
    ):
        await link(evil, evil_pubsub, good.host)
        envelope = seal_body(evil_key, presence())
        await evil_pubsub.publish(WIRE_PRESENCE, envelope)
        first = await next_message(good)
        assert first.origin == evil.peer_id
        await evil_pubsub.publish(WIRE_PRESENCE, envelope)  # the same envelope, a new gossip seqno
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.ignored >= 1)
        assert good.gossip.stats.rejected == 0
        assert good.gossip.scores.score(evil.peer_id, wall_clock_ms()) == 0


async def test_expired_is_ignored_without_blame() -> None:
    """Gossip hands recent messages to peers that just joined: old is not malicious."""
    async with (
        honest_node() as good,
        hostile_peer([WIRE_PRESENCE]) as (evil, evil_pubsub, evil_key),
    ):
        await link(evil, evil_pubsub, good.host)
        await evil_pubsub.publish(WIRE_PRESENCE, seal_body(evil_key, presence(expires_in_ms=-1)))
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.ignored >= 1)
        assert good.gossip.stats.rejected == 0
        assert good.gossip.scores.score(evil.peer_id, wall_clock_ms()) == 0


async def test_repeated_rejects_ban_and_disconnect() -> None:
    params = ScoreParams(reject_penalty=10, ban_threshold=-30)
    async with honest_node(params) as good, hostile_peer([WIRE_PRESENCE]) as (evil, evil_pubsub, _):
        await link(evil, evil_pubsub, good.host)
        # back to back: after its first fault the attacker is pruned from the mesh, and later
        # messages it publishes to the topic reach no one (good for us, but not for this test)
        for i in range(3):
            await evil_pubsub.publish(WIRE_PRESENCE, b"garbage %d" % i)
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.bans >= 1)
        assert good.gossip.scores.banned(evil.peer_id, wall_clock_ms())
        assert good.gossip.pubsub.is_peer_blacklisted(ID.from_base58(evil.peer_id))
        with trio.fail_after(10):
            await good.gossip.wait_until(lambda stats: stats.disconnected >= 1)
        assert evil.peer_id not in good.host.connected_peers()


async def test_own_bursts_above_the_library_spam_limit_all_arrive() -> None:
    """Sharp edge 2: a 10 msg/s spam limit silently dropped our own publishes."""
    async with honest_node() as a, honest_node() as b:
        await link(a.host, a.gossip.pubsub, b.host)
        await a.gossip.pubsub.wait_for_mesh(ID.from_base58(b.host.peer_id), WIRE_PRESENCE, 10)
        count = 40
        for seq in range(count):
            await a.gossip.publish(PRESENCE, seal_body(a.key, presence(seq)))
        seen = set()
        with trio.fail_after(30):
            while len(seen) < count:
                msg = await b.inbox.receive()
                seen.add(msg.opened.body.seq)  # type: ignore[attr-defined]
        assert b.gossip.stats.inbox_dropped == 0


async def test_router_parameters_are_ours() -> None:
    """Sharp edge 1: the defaults are a 120 s heartbeat and adaptive gossip that stretches it."""
    async with honest_node() as node:
        router = node.gossip.pubsub.router
        assert router.heartbeat_interval == 1  # type: ignore[attr-defined]
        assert router.adaptive_gossip_enabled is False  # type: ignore[attr-defined]
        assert list(router.protocols) == [PROTOCOL_ID_V11]  # type: ignore[attr-defined]
        assert router.max_messages_per_topic_per_second == GossipParams().spam_limit_per_s  # type: ignore[attr-defined]


async def test_open_close_cycles_leave_no_threads() -> None:
    """Sharp edge 5: each Pubsub starts a seen-cache thread that nothing stops."""
    async with honest_node():
        pass
    threads = threading.active_count()
    for _ in range(5):
        async with honest_node():
            pass
    assert threading.active_count() <= threads  # an idle worker from earlier may retire


async def test_a_corrupt_pubsub_frame_does_not_crash_the_node() -> None:
    """py-libp2p lets a protobuf DecodeError escape Pubsub's handler and kill the host."""
    async with honest_node() as good, honest_node() as other:
        await link(other.host, other.gossip.pubsub, good.host)
        async with open_host(os.urandom(32)) as attacker:
            await attacker.connect(good.host.addrs[0])
            stream = await attacker.new_stream(good.host.peer_id, str(PROTOCOL_ID_V11))
            await stream.write(b"\x05\xff\xff\xff\xff\xff")  # a 5-byte frame of invalid protobuf
            with trio.fail_after(10), contextlib.suppress(Exception):
                await stream.read(1)  # the guard resets the stream
        # the node is alive and still gossips
        await other.gossip.publish(PRESENCE, seal_body(other.key, presence()))
        got = await next_message(good)
        assert got.origin == other.host.peer_id


async def test_announce_repeats_until_confirmed() -> None:
    """Gossip is lossy: an important announcement repeats until its receiver confirms."""
    async with honest_node() as a, honest_node() as b:
        await link(a.host, a.gossip.pubsub, b.host)
        confirmed = trio.Event()
        envelope = seal_body(a.key, presence())

        async def confirm_on_receipt() -> None:
            msg = await next_message(b)
            assert msg.opened.raw == envelope
            confirmed.set()  # in the protocol this is a reply over a direct stream

        async with trio.open_nursery() as nursery:
            nursery.start_soon(confirm_on_receipt)
            with trio.fail_after(15):
                assert await a.gossip.announce(PRESENCE, envelope, confirmed, 0.2, 50)
        # never confirmed: gives up after max_times publishes, which receivers IGNORE as replays
        before = a.gossip.stats.published
        with trio.fail_after(15):
            assert not await a.gossip.announce(PRESENCE, envelope, trio.Event(), 0.05, 3)
            await a.gossip.wait_until(lambda stats: stats.published >= before + 3)
        assert a.gossip.stats.published == before + 3  # and no more


@pytest.mark.parametrize(("pubsub_class", "intact"), [(SerialPubsub, True), (Pubsub, False)])
async def test_concurrent_writes_over_64_kib_arrive_intact(
    pubsub_class: type[Pubsub], intact: bool
) -> None:
    """Yamux splits a write over 64 KiB into frames and interleaves concurrent writers.

    py-libp2p's Pubsub writes to one stream from its send queue and, on a graft, from the
    router directly; here four tasks write large RPCs at once. Through SerialPubsub the stream
    stays intact; through plain Pubsub (the regression guard) the receiver sees a garbled frame.
    """
    async with (
        honest_node() as good,
        hostile_peer([WIRE_PRESENCE], pubsub_class) as (evil, ps, key),
    ):
        await link(evil, ps, good.host)
        stream = ps.peers[ID.from_base58(good.host.peer_id)]
        big = rpc_pb2.RPC(
            publish=[rpc_pb2.Message(data=bytes(100 * 1024), topicIDs=[WIRE_PRESENCE])]
        )
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(ps.write_msg, stream, big)
        if intact:  # the same stream still carries a valid message
            await ps.publish(WIRE_PRESENCE, seal_body(key, presence()))
            await next_message(good)
        else:
            with trio.fail_after(10):
                await good.gossip.wait_until(lambda stats: stats.corrupt_streams > 0)
        assert (good.gossip.stats.corrupt_streams == 0) is intact


@pytest.mark.parametrize(("pubsub_class", "survives"), [(SerialPubsub, True), (Pubsub, False)])
async def test_blacklisting_a_peer_whose_stream_dies_meanwhile(
    pubsub_class: type[Pubsub], survives: bool
) -> None:
    """A ban resets the peer's stream; the reset wakes the stream's reader, which forgets the
    peer before the teardown does. Upstream's teardown then raised KeyError, which stopped
    pubsub and crashed a requester daemon in CI. The reader's turn is forced here, not raced.
    """
    async with honest_node() as good, hostile_peer([WIRE_PRESENCE], pubsub_class) as (evil, ps, _):
        await link(evil, ps, good.host)
        peer = ID.from_base58(good.host.peer_id)
        stream = ps.peers[peer]
        reset = stream.reset

        async def reset_and_lose_the_race() -> None:
            ps._handle_dead_peer(peer)
            await reset()

        stream.reset = reset_and_lose_the_race  # type: ignore[method-assign]
        if survives:
            await ps._teardown_if_connected(peer)
        else:
            with pytest.raises(KeyError):
                await ps._teardown_if_connected(peer)
        assert peer not in ps.peers


async def test_two_subscribers_of_one_topic_each_get_every_message() -> None:
    async with AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(honest_node()) for _ in range(2)]
        second = await b.gossip.subscribe(PRESENCE)  # a second service of b on the topic
        await link(a.host, a.gossip.pubsub, b.host)
        await b.gossip.pubsub.wait_for_mesh(ID.from_base58(a.host.peer_id), WIRE_PRESENCE, 10)
        bodies = [presence(seq) for seq in (1, 2, 3)]
        for body in bodies:
            await a.gossip.publish(PRESENCE, seal_body(a.key, body))
        with trio.fail_after(10):
            first_got = [(await next_message(b)).opened.body for _ in bodies]
            second_got = [(await second.receive()).opened.body for _ in bodies]
        assert first_got == second_got == bodies
