"""Gossip benchmark: our gossip layer next to bare py-libp2p GossipSub with library defaults.

N hosts on 127.0.0.1, spread round-robin over ``--procs`` processes (default: one per CPU, so
a node's work is not queued behind every other node's on one core, as it would not be in a
real network; ``--procs 1`` puts them all in one), each connected to up to 3 random earlier
hosts (so each knows only a few peers). Messages are published from random nodes at a fixed
rate; every node records when each message arrives (``time.monotonic``, one clock for every
process on a machine). Reported per setup: delivery rate, p50/p99 publish-to-receive latency,
and CPU milliseconds per message per node (every process's CPU time, summed).

"ours" publishes signed envelopes through p2p.gossip (validation, scores, pacing) on our
hosts; "defaults" is bare py-libp2p: a host from the library's ``new_host`` defaults (TCP,
Noise, Yamux), raw bytes through ``GossipSub(degree=6, degree_low=4, degree_high=12)`` with
every other parameter left at the library's default, and no validator. Each setup runs in
processes of its own, so none of our process-wide fixes to the library (Yamux window updates,
the signed-record caches) reaches the baseline.

Usage: python bench/gossip.py [--nodes 10 30] [--messages 60] [--rate 3] [--procs 2]
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
from typing import Any

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


async def line(stdin: trio.abc.ReceiveStream, buffer: bytearray) -> dict[str, Any]:
    """The next JSON line from the parent."""
    while b"\n" not in buffer:
        data = await stdin.receive_some(1 << 16)
        if not data:
            raise SystemExit("the parent went away")
        buffer += data
    raw, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    answer: dict[str, Any] = json.loads(raw)
    return answer


def say(value: object) -> None:
    print(json.dumps(value), flush=True)


async def part(kind: str, count: int) -> None:
    """One child's share of the network: ``count`` nodes, driven by the parent over stdin.

    Steps (a JSON line each way): our addresses; whom to dial, then ready once every node has
    someone in its mesh; when and what to publish, then what we sent and received.
    """
    run, buffer = Run(), bytearray()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    factory = our_node if kind == "ours" else default_node
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(factory(run, nursery)) for _ in range(count)]
        say({"addrs": [node.addr for node in nodes]})
        for local, addr in (await line(stdin, buffer))["connect"]:
            await nodes[local].connect(addr)
        with trio.fail_after(60):  # every node must have someone in its mesh before we start
            for node in nodes:
                while not node.pubsub.router.mesh.get(node.topic):
                    await trio.sleep(0.1)
        say({"ready": True})
        plan = await line(stdin, buffer)
        cpu0 = time.process_time()
        for seq, local in sorted((int(s), i) for s, i in plan["publish"].items()):
            await trio.sleep(max(0.0, plan["t0"] + seq / plan["rate"] - time.monotonic()))
            run.sent[seq] = time.monotonic()
            await nodes[local].publish(seq)
        with trio.move_on_at(trio.current_time() + plan["t_drain"] - time.monotonic()):
            while sum(len(v) for v in run.received.values()) < plan["expect"]:
                await trio.sleep(0.1)  # drain: stop early once everything arrived
        cpu_ms = (time.process_time() - cpu0) * 1000
        say({"sent": run.sent, "received": run.received, "cpu_ms": cpu_ms})
        nursery.cancel_scope.cancel()


def measure(kind: str, n: int, messages: int, rate: float, procs: int) -> dict[str, float]:
    """Runs one setup over ``procs`` fresh processes (node i in process i mod procs) and
    returns its figures."""
    rng = random.Random(n)
    owner = [(i % procs, i // procs) for i in range(n)]  # (process, index in it)
    sizes = [sum(1 for o in owner if o[0] == p) for p in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--part", kind, "--nodes", str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for size in sizes
    ]  # fmt: skip
    try:
        addrs = [read(c)["addrs"] for c in children]
        dials: list[list[tuple[int, str]]] = [[] for _ in children]
        for i in range(1, n):
            for j in rng.sample(range(i), min(3, i)):
                dials[owner[i][0]].append((owner[i][1], addrs[owner[j][0]][owner[j][1]]))
        for child, todo in zip(children, dials, strict=True):
            write(child, {"connect": todo})
        for child in children:
            read(child)  # ready
        t0 = time.monotonic() + 1.0
        publishers = [owner[rng.randrange(n)] for _ in range(messages)]
        t_drain = t0 + messages / rate + 10
        for p, child in enumerate(children):
            mine = {seq: local for seq, (q, local) in enumerate(publishers) if q == p}
            expect = messages * sizes[p] - len(mine)
            plan = {"t0": t0, "rate": rate, "publish": mine, "expect": expect, "t_drain": t_drain}
            write(child, plan)
        results = [read(c) for c in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    return figures(results, n, messages)


def read(child: subprocess.Popen[str]) -> dict[str, Any]:
    assert child.stdout is not None
    raw = child.stdout.readline()
    if not raw:
        raise SystemExit(f"a bench child exited early (code {child.wait()})")
    answer: dict[str, Any] = json.loads(raw)
    return answer


def write(child: subprocess.Popen[str], value: object) -> None:
    assert child.stdin is not None
    child.stdin.write(json.dumps(value) + "\n")
    child.stdin.flush()


def figures(results: list[dict[str, Any]], n: int, messages: int) -> dict[str, float]:
    sent = {int(seq): t for r in results for seq, t in r["sent"].items()}
    latencies = [
        (t - sent[int(seq)]) * 1000
        for r in results
        for seq, ts in r["received"].items()
        for t in ts
    ]
    qs = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "delivery_pct": 100 * len(latencies) / (messages * (n - 1)),
        "p50_ms": qs[49],
        "p99_ms": qs[98],
        "cpu_ms_per_msg": sum(r["cpu_ms"] for r in results) / (messages * n),
    }


def main(sizes: list[int], messages: int, rate: float, procs: int) -> None:
    results = {}
    print(f"{procs} processes per setup, nodes spread round-robin; {rate} messages/s")
    header = ("nodes", "setup", "delivery%", "p50 ms", "p99 ms", "cpu ms/msg/node")
    print("{:>5} {:<9} {:>9} {:>8} {:>8} {:>16}".format(*header))
    for n in sizes:
        for kind in ("ours", "defaults"):
            r = measure(kind, n, messages, rate, procs)
            results[(n, kind)] = r
            row = (n, kind, r["delivery_pct"], r["p50_ms"], r["p99_ms"], r["cpu_ms_per_msg"])
            print("{:>5} {:<9} {:>9.1f} {:>8.1f} {:>8.1f} {:>16.2f}".format(*row), flush=True)
    n = max(sizes)
    ours, base = results[(n, "ours")], results[(n, "defaults")]
    print(
        f"RESULT nodes={n} delivery_pct={ours['delivery_pct']:.1f} p50_ms={ours['p50_ms']:.1f} "
        f"p99_ms={ours['p99_ms']:.1f} cpu_ms_per_msg={ours['cpu_ms_per_msg']:.2f} "
        f"baseline_cpu_ms_per_msg={base['cpu_ms_per_msg']:.2f} "
        f"baseline_delivery_pct={base['delivery_pct']:.1f} procs={procs}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--rate", type=float, default=3.0, help="messages per second, network-wide")
    parser.add_argument(
        "--procs", type=int, default=os.cpu_count() or 1,
        help="processes the nodes are spread over (default: one per CPU; 1: all in one)",
    )  # fmt: skip
    parser.add_argument("--part", choices=["ours", "defaults"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a child of measure: some of one setup's nodes
        trio.run(part, args.part, args.nodes[0])
    else:
        main(args.nodes, args.messages, args.rate, args.procs)
