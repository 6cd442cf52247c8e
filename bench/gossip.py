"""Gossip benchmark: our gossip layer next to bare py-libp2p GossipSub with library defaults.

N hosts in one process on 127.0.0.1, each connected to up to 3 random earlier hosts (so each
knows only a few peers). Messages are published from random nodes at a fixed rate; every node
records when each message arrives. Reported per setup: delivery rate, p50/p99
publish-to-receive latency, and process CPU milliseconds per message per node.

"ours" publishes signed envelopes through p2p.gossip (validation, scores, pacing); "defaults"
publishes raw bytes through ``GossipSub(degree=6, degree_low=4, degree_high=12)`` with every
other parameter left at the library's default and no validator.

Usage: python bench/gossip.py [--nodes 10 30] [--messages 60] [--rate 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import nacl.signing
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from consensus.envelope import new_nonce, seal_body
from consensus.kinds import Ping, Registry
from consensus.scores import PeerScores
from p2p.gossip import open_gossip, topic_name
from p2p.host import Host, open_host
from p2p.validation import EnvelopeValidator, wall_clock_ms

TOPIC = topic_name("bench")


@dataclass
class Run:
    received: dict[int, list[float]] = field(default_factory=dict)  # msg seq -> arrival times
    sent: dict[int, float] = field(default_factory=dict)

    def arrived(self, seq: int) -> None:
        self.received.setdefault(seq, []).append(time.monotonic())


@dataclass
class Node:
    host: Host
    publish: Callable[[int], object]  # seq -> awaitable
    pubsub: Pubsub


@asynccontextmanager
async def our_node(run: Run, nursery: trio.Nursery) -> AsyncIterator[Node]:
    seed = os.urandom(32)
    key = nacl.signing.SigningKey(seed)
    validator = EnvelopeValidator(Registry([Ping]), {TOPIC: frozenset({Ping.KIND})})
    async with open_host(seed) as host, open_gossip(host, validator, PeerScores()) as gossip:
        inbox = await gossip.subscribe(TOPIC)

        async def consume() -> None:
            async for msg in inbox:
                if msg.origin != host.peer_id:
                    run.arrived(msg.opened.body.seq)  # type: ignore[attr-defined]

        nursery.start_soon(consume)

        async def publish(seq: int) -> None:
            body = Ping(expires_ms=wall_clock_ms() + 60_000, nonce=new_nonce(), seq=seq)
            await gossip.publish(TOPIC, seal_body(key, body))

        yield Node(host, publish, gossip.pubsub)


@asynccontextmanager
async def default_node(run: Run, nursery: trio.Nursery) -> AsyncIterator[Node]:
    async with open_host(os.urandom(32)) as host:
        # v1.2 preferred, as the library negotiates it; every other parameter its default
        protocols = [PROTOCOL_ID_V12, PROTOCOL_ID_V11]
        router = GossipSub(protocols=protocols, degree=6, degree_low=4, degree_high=12)
        pubsub = Pubsub(host.libp2p, router)
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                sub = await pubsub.subscribe(TOPIC)

                async def consume() -> None:
                    async for msg in sub:
                        if ID(msg.from_id) != host.libp2p.get_id():
                            run.arrived(struct.unpack(">I", msg.data[:4])[0])

                nursery.start_soon(consume)

                async def publish(seq: int) -> None:
                    await pubsub.publish(TOPIC, struct.pack(">I", seq) + bytes(200))

                yield Node(host, publish, pubsub)
        finally:
            pubsub.seen_messages.stop()


async def measure(kind: str, n: int, messages: int, rate: float) -> dict[str, float]:
    run = Run()
    factory = our_node if kind == "ours" else default_node
    rng = random.Random(n)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(factory(run, nursery)) for _ in range(n)]
        for i, node in enumerate(nodes[1:], start=1):
            for j in rng.sample(range(i), min(3, i)):
                await node.host.connect(nodes[j].host.addrs[0])
        with trio.fail_after(60):  # every node must have someone in its mesh before we start
            for node in nodes:
                while not node.pubsub.router.mesh.get(TOPIC):  # type: ignore[attr-defined]
                    await trio.sleep(0.1)
        cpu0 = time.process_time()
        for seq in range(messages):
            run.sent[seq] = time.monotonic()
            await nodes[rng.randrange(n)].publish(seq)  # type: ignore[misc]
            await trio.sleep(1 / rate)
        with trio.move_on_after(10):  # drain: stop early once everything arrived
            while sum(len(v) for v in run.received.values()) < messages * (n - 1):
                await trio.sleep(0.1)
        cpu_ms = (time.process_time() - cpu0) * 1000
        nursery.cancel_scope.cancel()
    latencies = [(t - run.sent[s]) * 1000 for s, ts in run.received.items() for t in ts]
    delivered = sum(len(v) for v in run.received.values())
    qs = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "delivery_pct": 100 * delivered / (messages * (n - 1)),
        "p50_ms": qs[49],
        "p99_ms": qs[98],
        "cpu_ms_per_msg": cpu_ms / (messages * n),
    }


async def main(sizes: list[int], messages: int, rate: float) -> None:
    results = {}
    header = ("nodes", "setup", "delivery%", "p50 ms", "p99 ms", "cpu ms/msg/node")
    print("{:>5} {:<9} {:>9} {:>8} {:>8} {:>16}".format(*header))
    for n in sizes:
        for kind in ("ours", "defaults"):
            r = await measure(kind, n, messages, rate)
            results[(n, kind)] = r
            row = (n, kind, r["delivery_pct"], r["p50_ms"], r["p99_ms"], r["cpu_ms_per_msg"])
            print("{:>5} {:<9} {:>9.1f} {:>8.1f} {:>8.1f} {:>16.2f}".format(*row), flush=True)
    n = max(sizes)
    ours, base = results[(n, "ours")], results[(n, "defaults")]
    print(
        f"RESULT nodes={n} delivery_pct={ours['delivery_pct']:.1f} p50_ms={ours['p50_ms']:.1f} "
        f"p99_ms={ours['p99_ms']:.1f} cpu_ms_per_msg={ours['cpu_ms_per_msg']:.2f} "
        f"baseline_cpu_ms_per_msg={base['cpu_ms_per_msg']:.2f} "
        f"baseline_delivery_pct={base['delivery_pct']:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--rate", type=float, default=3.0, help="messages per second, network-wide")
    args = parser.parse_args()
    trio.run(main, args.nodes, args.messages, args.rate)
