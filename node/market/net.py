"""What the market needs of the network, as one small interface, and its libp2p implementation.

The market's drivers (requester and worker) talk only to :class:`MarketNet`: publish and
subscribe signed bodies on gossip topics, seal and open signed envelopes sent direct, make and
serve requests, and read the pool. :class:`LiveNet` implements it on the node's libp2p host;
the services tests implement it in memory (``tests/services/memnet.py``), so that a hundred
jobs over ten workers run in one process under trio's mock clock.

Every inbound envelope, gossiped or direct, is opened with the same checks (signature, kind,
schema, expiry, replay); a direct envelope whose signer is not the stream's authenticated peer
is refused, so nobody can forward another's bid or voucher as their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import nacl.signing
import trio

from consensus.envelope import Opened, ReplayGuard, open_envelope, seal_body
from consensus.errors import Invalid
from consensus.kinds import Body, Registry
from consensus.pool import Worker
from node.network import Network, now_ms
from node.peerbook import PeerBook
from p2p.gossip import Message, topic_name
from p2p.host import DialError
from p2p.reqresp import RequestRejected, StreamFailed, request, serve

log = logging.getLogger(__name__)

RequestHandler = Callable[[str, Any], Awaitable[Any]]
BLOB_MAX_BYTES = 2 << 20  # frames carrying blob pieces (1 MiB of data and the framing)


class MarketNet(Protocol):
    """The network as the market's drivers see it."""

    peer_id: str

    def addrs(self) -> list[str]: ...

    def now_ms(self) -> int: ...

    def seal(self, body: Body) -> bytes: ...

    def open(self, raw: Any, sender: str) -> Opened:
        """Opens a direct envelope from ``sender``; raises Invalid if it is not theirs or bad."""
        ...

    async def publish(self, topic: str, body: Body) -> None: ...

    async def subscribe(
        self, topic: str, kinds: frozenset[str]
    ) -> trio.MemoryReceiveChannel[Message]: ...

    async def request(
        self,
        peer: str,
        addrs: Sequence[str],
        protocol: str,
        payload: Any,
        *,
        timeout_s: float,
        max_bytes: int = ...,
        keep: bool = ...,
    ) -> Any:
        """Raises p2p.reqresp's RequestError family (RemoteError, RequestTimeout, ...).

        ``keep``: send on a stream kept open for the next request to ``peer`` on
        ``protocol`` (:class:`p2p.channel_pool.ChannelPool`): one round trip instead of three,
        for exchanges someone waits on. Never resent, either way.
        """
        ...

    def serve(
        self, protocol: str, handler: RequestHandler, max_bytes: int = ..., timeout_s: float = ...
    ) -> None: ...

    def workers(self) -> list[Worker]: ...

    def rtt_ms(self, peer: str) -> int | None: ...

    def connected(self, peer: str) -> bool:
        """Whether we hold a connection to ``peer`` now (asking it needs no dial)."""
        ...

    def blame(self, peer: str, reason: str) -> None:
        """Costs ``peer`` score for a provable fault outside gossip (served corrupt bytes)."""
        ...


class DirectEnvelopes:
    """Seals our direct messages and opens others': one replay guard per node."""

    def __init__(self, key: nacl.signing.SigningKey, registry: Registry) -> None:
        self.key, self.registry, self.replay = key, registry, ReplayGuard()

    def seal(self, body: Body) -> bytes:
        return seal_body(self.key, body)

    def open(self, raw: Any, sender: str, now_ms: int) -> Opened:
        if not isinstance(raw, bytes):
            raise Invalid("envelope", "expected bytes")
        self.replay.prune(now_ms)
        opened = open_envelope(raw, now_ms, self.registry, replay=self.replay)
        if opened.signer_peer_id != sender:
            raise Invalid("envelope.signer", "not the peer that sent it")
        return opened


class LiveNet:
    """:class:`MarketNet` on the node's libp2p host, gossip and pool."""

    def __init__(self, network: Network, envelopes: DirectEnvelopes) -> None:
        self.network, self.host, self.envelopes = network, network.host, envelopes
        self.peer_id = network.host.peer_id
        self._dialing: dict[str, trio.Lock] = {}  # peer -> its dial (one at a time per peer)

    def addrs(self) -> list[str]:
        return self.network.announced_addrs()

    def now_ms(self) -> int:
        return now_ms()

    def seal(self, body: Body) -> bytes:
        return self.envelopes.seal(body)

    def open(self, raw: Any, sender: str) -> Opened:
        return self.envelopes.open(raw, sender, now_ms())

    async def publish(self, topic: str, body: Body) -> None:
        await self.network.gossip.publish(topic, self.envelopes.seal(body))

    async def subscribe(
        self, topic: str, kinds: frozenset[str]
    ) -> trio.MemoryReceiveChannel[Message]:
        self.network.validator.topic_kinds[topic] = kinds  # sharded topics join at run time
        return await self.network.gossip.subscribe(topic)

    async def request(
        self,
        peer: str,
        addrs: Sequence[str],
        protocol: str,
        payload: Any,
        *,
        timeout_s: float,
        max_bytes: int = BLOB_MAX_BYTES,
        keep: bool = False,
    ) -> Any:
        with trio.fail_after(timeout_s):
            await self.ensure_connected(peer, addrs)
        if keep:
            return await self.network.channels.request(
                peer, protocol, payload, timeout_s=timeout_s, max_bytes=max_bytes
            )
        return await request(
            self.host, peer, protocol, payload, timeout_s=timeout_s, max_bytes=max_bytes
        )

    def serve(
        self,
        protocol: str,
        handler: RequestHandler,
        max_bytes: int = BLOB_MAX_BYTES,
        timeout_s: float = 30.0,
    ) -> None:
        serve(self.host, protocol, handler, max_bytes=max_bytes, timeout_s=timeout_s)

    def workers(self) -> list[Worker]:
        gate = self.host.gate  # a blocked worker is out of the market, whatever it announced
        return [w for w in self.network.pool.workers() if not gate.blocked(w.peer_id)]

    def connected(self, peer: str) -> bool:
        return peer in self.host.connected_peers()

    def rtt_ms(self, peer: str) -> int | None:
        known = self.network.book.peers.get(peer)
        return None if known is None else known.rtt_ms

    def blame(self, peer: str, reason: str) -> None:
        self.network.gossip.penalise(peer, reason, what="peer at fault")

    async def ensure_connected(self, peer: str, addrs: Sequence[str]) -> None:
        """Dials ``peer`` at one of ``addrs``, then at those its announcements gave (the peer
        book), unless connected already: a peer heard on gossip through others (an anchorer
        asked for epoch history, say) is reachable without addresses of the caller's own.

        Raises:
            StreamFailed: none of them answered.
        """
        if peer in self.host.connected_peers():
            return
        addrs = dial_candidates(peer, addrs, self.network.book)
        lock = self._dialing.setdefault(peer, trio.Lock())
        try:
            async with lock:  # concurrent dials to one peer would race the library
                if peer in self.host.connected_peers():
                    return
                for addr in addrs:
                    try:
                        await self.host.connect(addr)
                    except (DialError, ValueError) as exc:
                        what = {"peer": peer, "addr": addr, "error": str(exc)}
                        log.debug("dial failed", extra=what)
                    else:
                        return
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._dialing.pop(peer, None)
        raise StreamFailed(f"cannot reach {peer} at {addrs}")


MAX_DIAL_ADDRS = 8  # a peer announcing many dead addresses delays only requests to itself


def dial_candidates(peer: str, addrs: Sequence[str], book: PeerBook) -> list[str]:
    """``addrs`` of ``peer`` (those that name it), then the book's for it, each once, at most
    :data:`MAX_DIAL_ADDRS`."""
    known = book.peers.get(peer)
    mine = [a for a in [*addrs, *(known.addrs if known else [])] if a.endswith(f"/p2p/{peer}")]
    return list(dict.fromkeys(mine))[:MAX_DIAL_ADDRS]


def jobs_topic(gpu_class: str) -> str:
    return topic_name("jobs", gpu_class)


AWARDS = topic_name("awards")

__all__ = ["AWARDS", "DirectEnvelopes", "LiveNet", "MarketNet", "RequestRejected", "jobs_topic"]
