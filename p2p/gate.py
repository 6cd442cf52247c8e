"""Blocked peers: who the host refuses to talk to, until when, and how that is enforced.

A block has a source: ``"operator"`` (``idlegrid peers block``) or ``"score"`` (a peer score
ban, see :mod:`consensus.scores`). A peer is blocked while any of its blocks lasts, so lifting
an operator block does not cut a score ban short, nor the other way round.

Enforcement sits at the lowest point each path crosses, because the library dials and accepts
on its own (the DHT, gossipsub's direct peers, the auto-connector, relays):

* ``swarm.dial_peer`` refuses a blocked peer before any socket is opened (every outbound
  dial of the library, and :meth:`p2p.host.Host.connect` / ``new_stream``, goes through it);
* a swarm notifee closes any connection to a blocked peer as soon as it is registered, i.e.
  as soon as Noise has told us who is on the other end (inbound and relayed ones included);
* :meth:`p2p.host.Host.set_stream_handler` resets streams from a blocked peer before the
  handler runs (a stream can arrive in the instant before the notifee closes its connection);
* gossip keeps the pubsub blacklist equal to the blocked set (:mod:`p2p.gossip`), so messages
  forwarded by or originating from a blocked peer are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from multiaddr import Multiaddr

log = logging.getLogger(__name__)

OPERATOR: Final = "operator"
SCORE: Final = "score"
CLOSE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Block:
    """One block: ``until_ms`` None lasts until lifted."""

    peer_id: str
    source: str
    since_ms: int
    until_ms: int | None
    reason: str = ""

    def active(self, now_ms: int) -> bool:
        return self.until_ms is None or now_ms < self.until_ms


class PeerGate:
    """The blocked set, by peer and source; time is read from ``clock`` (wall-clock ms).

    Every change sets and replaces :attr:`changed`, so enforcement loops wake at once.
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self._blocks: dict[str, dict[str, Block]] = {}
        self.changed = trio.Event()

    def block(self, block: Block) -> None:
        """Adds (or replaces) ``block.peer_id``'s block from ``block.source``."""
        self._blocks.setdefault(block.peer_id, {})[block.source] = block
        self._wake()

    def unblock(self, peer_id: str, source: str) -> bool:
        """Lifts ``source``'s block on ``peer_id``; False if there was none."""
        mine = self._blocks.get(peer_id, {})
        lifted = mine.pop(source, None) is not None
        if not mine:
            self._blocks.pop(peer_id, None)
        if lifted:
            self._wake()
        return lifted

    def blocked(self, peer_id: str) -> bool:
        now = self.clock()
        return any(b.active(now) for b in self._blocks.get(peer_id, {}).values())

    def blocked_peers(self) -> set[str]:
        now = self.clock()
        return {p for p, bs in self._blocks.items() if any(b.active(now) for b in bs.values())}

    def blocks(self) -> list[Block]:
        """Every active block, oldest first."""
        now = self.clock()
        active = [b for b in self._all() if b.active(now)]
        return sorted(active, key=lambda b: (b.since_ms, b.peer_id, b.source))

    def expire(self) -> list[Block]:
        """Forgets blocks that have run out; returns them (so their peers can be let back)."""
        now = self.clock()
        gone = [b for b in self._all() if not b.active(now)]
        for b in gone:
            self.unblock(b.peer_id, b.source)
        return gone

    def next_expiry_ms(self) -> int | None:
        return min((b.until_ms for b in self._all() if b.until_ms is not None), default=None)

    def _all(self) -> list[Block]:
        return [b for by_source in self._blocks.values() for b in by_source.values()]

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class QuietNotifee(INotifee):
    """An INotifee that ignores every event: subclasses override the ones they watch."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class _GateNotifee(QuietNotifee):
    """Closes every connection to a blocked peer as soon as the swarm registers it."""

    def __init__(self, gate: PeerGate) -> None:
        self.gate = gate

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if not self.gate.blocked(peer.to_base58()):
            return
        log.info("closing a connection from a blocked peer", extra={"peer": peer.to_base58()})
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await conn.close()


def install_gate(network: Any, gate: PeerGate) -> None:
    """Makes the library's swarm obey ``gate`` (see the module doc)."""
    dial_peer: Callable[[ID], Awaitable[list[INetConn]]] = network.dial_peer

    async def gated_dial_peer(peer_id: ID) -> list[INetConn]:
        if gate.blocked(peer_id.to_base58()):
            raise SwarmException(f"peer {peer_id} is blocked")
        return await dial_peer(peer_id)

    network.dial_peer = gated_dial_peer
    network.register_notifee(_GateNotifee(gate))
