"""Peers py-libp2p's pubsub leaves deaf for good are relinked (p2p.gossip_links).

Each test injects one of the failures the module names between a requester and a worker on
127.0.0.1 and checks that the requester's gossip on the worker's topic reaches the worker
again. Each fails without the repair loop: the link stays broken however long one waits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nacl.signing
import trio
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from consensus.envelope import new_nonce, seal_body
from consensus.kinds import Registry
from consensus.pool import GpuOffer, Presence
from consensus.scores import PeerScores, ScoreParams
from p2p.gossip import Gossip, GossipParams, Message, open_gossip, topic_name, wire_topic
from p2p.host import Host, open_host
from p2p.validation import EnvelopeValidator, wall_clock_ms

PRESENCE, JOBS = topic_name("presence"), topic_name("jobs", "cpu")
WIRE_JOBS = wire_topic(JOBS, "main")  # as pubsub knows it
TOPICS = {PRESENCE: frozenset({Presence.KIND}), JOBS: frozenset({Presence.KIND})}
FAST = GossipParams(relink_interval_s=0.2)


@dataclass
class Node:
    seed: bytes
    host: Host
    gossip: Gossip

    @property
    def pid(self) -> ID:
        return ID.from_base58(self.host.peer_id)

    def message(self) -> bytes:
        offer = GpuOffer(gpu_class="cpu", count=1, vram_mb=0, price_wei_per_s=1000)
        body = Presence(
            expires_ms=wall_clock_ms() + 60_000, nonce=new_nonce(), run_id=b"run-0001", seq=1,
            status="available", offers=[offer], capacity=1,
        )  # fmt: skip
        return seal_body(nacl.signing.SigningKey(self.seed), body)


@asynccontextmanager
async def node() -> AsyncIterator[Node]:
    seed = os.urandom(32)
    async with open_host(seed) as host:
        validator = EnvelopeValidator(Registry([Presence]), TOPICS)
        async with open_gossip(host, validator, PeerScores(ScoreParams()), FAST) as gossip:
            yield Node(seed, host, gossip)


async def heard(requester: Node, worker: Node, inbox: trio.MemoryReceiveChannel[Message]) -> None:
    """The requester learns the worker listens on JOBS, and what it publishes there arrives."""
    with trio.fail_after(10):
        await requester.gossip.pubsub.wait_for_peer(worker.pid)
        await requester.gossip.pubsub.wait_for_subscription(worker.pid, WIRE_JOBS, timeout=10)
        sent = requester.message()
        await requester.gossip.publish(JOBS, sent)
        while (await inbox.receive()).opened.raw != sent:
            pass


async def test_a_peer_whose_stream_setup_failed_is_relinked() -> None:
    async with node() as requester, node() as worker:
        client = requester.host.libp2p.multiselect_client
        real, failed = client.select_one_of, []

        async def flaky(protocols: Sequence[Any], communicator: Any, timeout: int = 10) -> Any:
            peer = communicator.read_writer.muxed_conn.peer_id
            if not failed and peer == worker.pid and any("meshsub" in str(p) for p in protocols):
                failed.append(peer)  # what a negotiation timing out raises
                raise MultiselectClientError("response timed out (injected)")
            return await real(protocols, communicator, timeout)

        client.select_one_of = flaky  # type: ignore[method-assign]
        inbox = await worker.gossip.subscribe(JOBS)
        await worker.host.connect(requester.host.addrs[0])
        await heard(requester, worker, inbox)
        assert failed == [worker.pid]


async def test_subscriptions_forgotten_with_a_dead_stream_are_repeated() -> None:
    async with node() as requester, node() as worker:
        inbox = await worker.gossip.subscribe(JOBS)
        await worker.host.connect(requester.host.addrs[0])
        pubsub = requester.gossip.pubsub
        with trio.fail_after(10):
            await pubsub.wait_for_subscription(worker.pid, WIRE_JOBS, timeout=10)
        await pubsub.peers[worker.pid].reset()  # what a write error does to our stream
        await heard(requester, worker, inbox)


async def test_a_subscription_made_while_a_peer_registers_reaches_it() -> None:
    async with AsyncExitStack() as stack:
        requester, worker = [await stack.enter_async_context(node()) for _ in range(2)]
        pubsub = worker.gossip.pubsub
        built = trio.Event()
        real_hello = pubsub.get_hello_packet

        def hello() -> Any:  # the hello to the requester is built: its topics are fixed now
            if requester.pid not in pubsub.peers:
                built.set()
            return real_hello()

        pubsub.get_hello_packet = hello  # type: ignore[method-assign]
        inboxes = []

        async def market_service_starts() -> None:
            await built.wait()
            inboxes.append(await worker.gossip.subscribe(JOBS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(market_service_starts)
            await worker.host.connect(requester.host.addrs[0])
        await heard(requester, worker, inboxes[0])


class Records(logging.Handler):
    """Keeps p2p.gossip_links' records and wakes a waiter on each (no polling)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, message: str, count: int) -> None:
        while sum(r.getMessage() == message for r in self.records) < count:
            await self.changed.wait()


async def test_a_peer_that_never_speaks_pubsub_is_warned_about_once() -> None:
    logger = logging.getLogger("p2p.gossip_links")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        async with node() as gossiping, open_host(os.urandom(32)) as plain:
            await gossiping.host.connect(plain.addrs[0])
            with trio.fail_after(10):  # three relinks tried (and refused: no pubsub there)
                await records.wait_for("pubsub stream reopened", 3)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    warnings = [r for r in records.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["connected peer without a pubsub stream"]
