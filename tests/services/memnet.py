"""An in-memory network implementing node.market.net.MarketNet, for many nodes in one process.

Messages are still real signed envelopes (sealed by the sender, opened and checked by the
receiver) and request payloads go through the same msgpack codec as on the wire; only the
transport is a function call with a small delay. Time is trio's clock, so a test can run
hours of market time under ``trio.testing.MockClock(autojump_threshold=...)``.

A node is killed by :meth:`Hub.kill`: requests to it fail from then on, its gossip stops, and
the test cancels its services (as a kill -9 would stop its process).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nacl.signing
import trio

from consensus.envelope import Opened, open_envelope
from consensus.kinds import Body, Registry
from consensus.market.messages import MARKET_KINDS, market_registry
from consensus.peer_id import peer_id_from_public_key
from consensus.pool import Worker
from consensus.verify.messages import VERIFY_KINDS
from node.market.net import DirectEnvelopes, RequestHandler
from p2p.gossip import Message
from p2p.reqresp import RemoteError, RequestRejected, RequestTimeout, StreamFailed

EPOCH_MS = int(time.time() * 1000)  # mock time 0 is "now", so envelope expiries stay sane
LATENCY_S = 0.005


@dataclass
class Hub:
    """The medium all MemNets share."""

    subscribers: dict[str, dict[str, trio.MemorySendChannel[Message]]] = field(default_factory=dict)
    servers: dict[str, dict[str, RequestHandler]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    pool: list[Worker] = field(default_factory=list)
    requests: int = 0
    gossip: int = 0
    blamed: list[tuple[str, str, str]] = field(default_factory=list)  # (by, whom, why)

    def kill(self, peer: str) -> None:
        self.dead.add(peer)
        for subs in self.subscribers.values():
            subs.pop(peer, None)

    def revive(self, peer: str) -> None:
        self.dead.discard(peer)


class MemNet:
    def __init__(self, hub: Hub, key: nacl.signing.SigningKey) -> None:
        self.hub = hub
        self.envelopes = DirectEnvelopes(key, market_registry())
        self.peer_id = peer_id_from_public_key(bytes(key.verify_key))
        self.registry: Registry = Registry((*MARKET_KINDS, *VERIFY_KINDS))  # what gossip carries

    def addrs(self) -> list[str]:
        return [f"/memory/p2p/{self.peer_id}"]

    def now_ms(self) -> int:
        return EPOCH_MS + int(trio.current_time() * 1000)

    def seal(self, body: Body) -> bytes:
        return self.envelopes.seal(body)

    def open(self, raw: Any, sender: str) -> Opened:
        return self.envelopes.open(raw, sender, self.now_ms())

    async def publish(self, topic: str, body: Body) -> None:
        if self.peer_id in self.hub.dead:
            return
        raw = self.seal(body)
        self.hub.gossip += 1
        for peer, channel in list(self.hub.subscribers.get(topic, {}).items()):
            opened = open_envelope(raw, self.now_ms(), self.registry)
            try:
                channel.send_nowait(Message(topic, opened))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.hub.subscribers[topic].pop(peer, None)

    async def subscribe(
        self, topic: str, kinds: frozenset[str]
    ) -> trio.MemoryReceiveChannel[Message]:
        send, receive = trio.open_memory_channel[Message](4096)
        self.hub.subscribers.setdefault(topic, {})[self.peer_id] = send
        return receive

    async def request(
        self,
        peer: str,
        addrs: Sequence[str],
        protocol: str,
        payload: Any,
        *,
        timeout_s: float,
        max_bytes: int = 1 << 21,
        keep: bool = False,  # no streams here: every request is one exchange
    ) -> Any:
        self.hub.requests += 1
        handler = self.hub.servers.get(peer, {}).get(protocol)
        if peer in self.hub.dead or self.peer_id in self.hub.dead or handler is None:
            await trio.sleep(LATENCY_S)
            raise StreamFailed(f"cannot reach {peer}")
        wire = msgpack.unpackb(msgpack.packb(payload))
        with trio.move_on_after(timeout_s):
            await trio.sleep(LATENCY_S)
            try:
                reply = await handler(self.peer_id, wire)
            except RequestRejected as exc:
                raise RemoteError(exc.code, exc.message) from None
            if peer in self.hub.dead:  # killed while answering: the answer is lost
                raise StreamFailed(f"{peer} went away")
            await trio.sleep(LATENCY_S)
            return msgpack.unpackb(msgpack.packb(reply))
        raise RequestTimeout(f"no answer from {peer} within {timeout_s} s")

    def serve(
        self,
        protocol: str,
        handler: RequestHandler,
        max_bytes: int = 1 << 21,
        timeout_s: float = 30.0,  # the in-memory net times nothing out
    ) -> None:
        self.hub.servers.setdefault(self.peer_id, {})[protocol] = handler

    def workers(self) -> list[Worker]:
        return [w for w in self.hub.pool if w.peer_id not in self.hub.dead]

    def rtt_ms(self, peer: str) -> int | None:
        return int(2 * LATENCY_S * 1000)

    def connected(self, peer: str) -> bool:
        return peer not in self.hub.dead

    def blame(self, peer: str, reason: str) -> None:
        self.hub.blamed.append((self.peer_id, peer, reason))
