"""Gossip benchmark: our gossip layer next to bare py-libp2p GossipSub with library defaults.

N hosts in one process on 127.0.0.1, each connected to up to 3 random earlier hosts (so each
knows only a few peers). Messages are published from random nodes at a fixed rate; every node
records when each message arrives. Reported per setup: delivery rate, p50/p99
publish-to-receive latency, and process CPU milliseconds per message per node.

"ours" publishes signed envelopes through p2p.gossip (validation, scores, pacing) on our
hosts; "defaults" is bare py-libp2p: a host from the library's ``new_host`` defaults (TCP,
Noise, Yamux), raw bytes through ``GossipSub(degree=6, degree_low=4, degree_high=12)`` with
every other parameter left at the library's default, and no validator. Each setup runs in a
process of its own, so none of our process-wide fixes to the library (Yamux window updates,
the signed-record caches) reaches the baseline.

Usage: python bench/gossip.py [--nodes 10 30] [--messages 60] [--rate 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import multiaddr
import nacl.signing
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from consensus.envelope import new_nonce, seal_body
from consensus.kinds import Ping, Registry
from consensus.scores import PeerScores
from p2p.gossip import open_gossip, topic_name
from p2p.host import open_host
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
    addr: str  # ends in /p2p/<peer id>
    connect: Callable[[str], Awaitable[object]]
    publish: Callable[[int], Awaitable[None]]
    pubsub: Pubsub
    topic: str  # as pubsub knows it


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

        yield Node(host.addrs[0], host.connect, publish, gossip.pubsub, gossip.wire(TOPIC))


@asynccontextmanager
async def bare_host() -> AsyncIterator[IHost]:
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), listen_addrs=[listen])
    async with host.run(listen_addrs=[listen]):
        yield host


@asynccontextmanager
async def default_node(run: Run, nursery: trio.Nursery) -> AsyncIterator[Node]:
    async with bare_host() as host:
        # v1.2 preferred, as the library negotiates it; every other parameter its default
        protocols = [PROTOCOL_ID_V12, PROTOCOL_ID_V11]
        router = GossipSub(protocols=protocols, degree=6, degree_low=4, degree_high=12)
        pubsub = Pubsub(host, router)
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                sub = await pubsub.subscribe(TOPIC)

                async def consume() -> None:
                    async for msg in sub:
                        if ID(msg.from_id) != host.get_id():
                            run.arrived(struct.unpack(">I", msg.data[:4])[0])

                nursery.start_soon(consume)

                async def publish(seq: int) -> None:
                    await pubsub.publish(TOPIC, struct.pack(">I", seq) + bytes(200))

                async def connect(addr: str) -> None:
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))

                addr = f"{host.get_addrs()[0]}"
                if "/p2p/" not in addr:
                    addr += f"/p2p/{host.get_id()}"
                yield Node(addr, connect, publish, pubsub, TOPIC)
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
                await node.connect(nodes[j].addr)
        with trio.fail_after(60):  # every node must have someone in its mesh before we start
            for node in nodes:
                while not node.pubsub.router.mesh.get(node.topic):  # type: ignore[attr-defined]
                    await trio.sleep(0.1)
        cpu0 = time.process_time()
        for seq in range(messages):
            run.sent[seq] = time.monotonic()
            await nodes[rng.randrange(n)].publish(seq)
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


def measure_apart(kind: str, n: int, messages: int, rate: float) -> dict[str, float]:
    """Runs one setup in a fresh process (see the module doc) and returns its figures."""
    argv = [sys.executable, __file__, "--one", kind, "--nodes", str(n)]
    argv += ["--messages", str(messages), "--rate", str(rate)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} at {n} nodes failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main(sizes: list[int], messages: int, rate: float) -> None:
    results = {}
    header = ("nodes", "setup", "delivery%", "p50 ms", "p99 ms", "cpu ms/msg/node")
    print("{:>5} {:<9} {:>9} {:>8} {:>8} {:>16}".format(*header))
    for n in sizes:
        for kind in ("ours", "defaults"):
            r = measure_apart(kind, n, messages, rate)
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
    parser.add_argument("--one", choices=["ours", "defaults"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child of measure_apart: one setup, one size, figures as JSON
        print(json.dumps(trio.run(measure, args.one, args.nodes[0], args.messages, args.rate)))
    else:
        main(args.nodes, args.messages, args.rate)
