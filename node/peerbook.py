"""The peers a node knows: what they announced, when they were last heard, and when to redial.

Peers are learned from the configured bootstrap list, from ``node.hello`` announcements on
gossip, and from sqlite (every peer heard is remembered, so a restarted node redials the
network it knew rather than only its bootstrap peers). Dialing backs off exponentially per
peer, so a dead peer costs one failed dial a minute at most, and only until it is forgotten:
peer ids are free, so the book is bounded, in memory (:data:`BOOK_MAX`, and a peer unheard and
unconnected for ``forget_after_ms``) and in sqlite (the :data:`REMEMBER_MAX` a restart reads).
Connected and bootstrap peers are never forgotten.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from node.sweep import Throttle
from storage.db import Database

BACKOFF_START_MS = 1_000
BACKOFF_MAX_MS = 60_000
# A dial "works" once its connection has lasted this long. A peer that blocks or bans us (or is
# full) accepts the dial and closes it at once: its backoff keeps growing instead of a
# handshake every second.
FLAP_MS = 5_000
REMEMBER_MAX = 1_000
# Peers held in memory. Well above what a restart reads (REMEMBER_MAX), so a large network
# seldom churns; once past it the longest-unheard go, a sixteenth at once (one sort per batch,
# not per hello from a fresh key).
BOOK_MAX = 4_096
# A peer neither heard nor connected this long is forgotten (no more redials, until it is heard
# or learned again). The network may pass ten offline thresholds, as its pool forgets workers;
# this default outlasts the longest announce interval (20 min) three times over.
FORGET_AFTER_MS = 3_600_000
SWEEP_MS = 60_000  # how often the dial loop's tick looks for peers to forget
# A remembered peer's last-seen only orders redials after a restart: rewriting its row on every
# hello (each peer's, every announce interval) was a steady sqlite write for nothing.
RESAVE_MS = 600_000


@dataclass
class Peer:
    peer_id: str
    addrs: list[str]
    roles: list[str] = field(default_factory=list)
    version: str = ""
    last_seen_ms: int = 0  # last announcement heard (0: never, e.g. a bootstrap entry)
    rtt_ms: int | None = None  # a dial's duration, until pings measure it (node/rtt.py)
    pinged: bool = False
    next_dial_ms: int = 0
    backoff_ms: int = BACKOFF_START_MS
    connected_ms: int = 0  # when our last dial of it succeeded
    # When it was last seen connected, or learned, or our own outage ended: its grace for
    # forgetting starts here (None: learned before the book read a clock).
    since_ms: int | None = None
    saved: tuple[tuple[str, ...], tuple[str, ...], int] | None = None  # addrs, roles, when
    chain: tuple[bytes, bytes] | None = None  # its hello's chain account and binding (unchecked)


def peer_id_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[1]


class PeerBook:
    def __init__(
        self,
        own_peer_id: str,
        bootstrap: Iterable[str] = (),
        *,
        max_peers: int = BOOK_MAX,
        forget_after_ms: int = FORGET_AFTER_MS,
    ) -> None:
        """Starts with the ``bootstrap`` addresses, whose peers are never forgotten: without
        them a node whose other peers all left could not rejoin until a restart."""
        self.own = own_peer_id
        self.peers: dict[str, Peer] = {}
        self.max_peers, self.forget_after_ms = max_peers, forget_after_ms
        self.pinned: set[str] = set()
        self._connected: set[str] = set()  # as the dial loop last saw it (lasting)
        self._now_ms = 0  # the latest clock reading given to the book
        self._sweeps = Throttle(SWEEP_MS)
        for addr in bootstrap:
            if (peer := self.add_addr(addr)) is not None:
                self.pinned.add(peer.peer_id)

    def add_addr(self, addr: str) -> Peer | None:
        """Adds a dialable address (bootstrap or remembered); None for our own."""
        peer_id = peer_id_of(addr)
        if peer_id == self.own:
            return None
        peer = self._entry(peer_id)
        if addr not in peer.addrs:
            peer.addrs.append(addr)
        return peer

    def heard(
        self, peer_id: str, addrs: list[str], roles: list[str], version: str, now_ms: int,
        *, chain: tuple[bytes, bytes] | None = None,
    ) -> Peer:  # fmt: skip
        """Records an announcement (a verified ``node.hello``) from ``peer_id``."""
        self._now_ms = max(self._now_ms, now_ms)
        peer = self._entry(peer_id)
        mine = [a for a in addrs if a.endswith(f"/p2p/{peer_id}")]  # a peer speaks for itself only
        peer.addrs = mine or peer.addrs
        peer.roles, peer.version, peer.last_seen_ms = roles, version, now_ms
        peer.chain = chain
        return peer

    def _entry(self, peer_id: str) -> Peer:
        """``peer_id``'s entry, made (and the book trimmed to its bound) if it is new."""
        peer = self.peers.get(peer_id)
        if peer is None:
            peer = self.peers[peer_id] = Peer(peer_id, [])
            if len(self.peers) > self.max_peers:
                self._evict(keep=peer_id)
        return peer

    def _evict(self, keep: str) -> None:
        """Forgets the longest-unheard peers down to fifteen sixteenths of the bound; never
        ``keep`` (the peer being added) or one :meth:`_forgettable` spares. Past the bound
        still when nearly all are connected or bootstrap: those are bounded elsewhere."""
        excess = len(self.peers) - (self.max_peers - self.max_peers // 16)
        candidates = (p for p in self.peers.values() if p.peer_id != keep and self._forgettable(p))
        for peer in heapq.nsmallest(excess, candidates, key=self._fresh_ms):
            del self.peers[peer.peer_id]

    def _forgettable(self, peer: Peer) -> bool:
        return peer.peer_id not in self._connected and peer.peer_id not in self.pinned

    def _fresh_ms(self, peer: Peer) -> int:
        """When ``peer`` last showed signs of life (or was learned)."""
        since = self._now_ms if peer.since_ms is None else peer.since_ms
        return max(peer.last_seen_ms, peer.connected_ms, since)

    def due(self, now_ms: int, connected: set[str], banned: set[str]) -> list[Peer]:
        """Peers to dial now: not connected, not banned, with an address, past their backoff."""
        return [
            p
            for p in self.peers.values()
            if p.peer_id not in connected
            and p.peer_id not in banned
            and p.peer_id != self.own
            and p.addrs
            and p.next_dial_ms <= now_ms
        ]

    def dialed(self, peer: Peer, ok: bool, now_ms: int, rtt_ms: int | None = None) -> None:
        """Records a dial; even a success backs off until :meth:`lasting` confirms it."""
        if ok:
            peer.connected_ms = now_ms
            if not peer.pinged:  # a ping's round trip is the better figure
                peer.rtt_ms = rtt_ms
        peer.next_dial_ms = now_ms + peer.backoff_ms
        peer.backoff_ms = min(2 * peer.backoff_ms, BACKOFF_MAX_MS)

    def lasting(self, connected: set[str], now_ms: int) -> None:
        """Resets the backoff of peers whose connection has lasted :data:`FLAP_MS`; now and
        then (the dial loop's tick) forgets peers long silent."""
        self._now_ms = max(self._now_ms, now_ms)
        self._connected = set(connected)
        for peer_id in connected:
            peer = self.peers.get(peer_id)
            if peer is None:
                continue
            peer.since_ms = now_ms
            if now_ms - peer.connected_ms >= FLAP_MS:
                peer.backoff_ms, peer.next_dial_ms = BACKOFF_START_MS, 0
        if self._sweeps.due(now_ms):
            self._forget_silent(now_ms)

    def _forget_silent(self, now_ms: int) -> None:
        """Forgets peers neither heard nor connected for ``forget_after_ms``. A node connected
        to no one cannot tell dead peers from its own outage: that time does not count."""
        offline = not self._connected
        for peer in list(self.peers.values()):
            if offline or peer.since_ms is None:
                peer.since_ms = now_ms
            elif now_ms - self._fresh_ms(peer) >= self.forget_after_ms and self._forgettable(peer):
                del self.peers[peer.peer_id]

    def online(self, peer: Peer, now_ms: int, offline_after_ms: int) -> bool:
        return peer.last_seen_ms > 0 and now_ms - peer.last_seen_ms < offline_after_ms


async def load_remembered(db: Database, book: PeerBook) -> int:
    rows = await db.query(
        "SELECT peer_id, addrs, roles, last_seen_ms FROM peers "
        "ORDER BY last_seen_ms DESC, peer_id LIMIT ?",
        (REMEMBER_MAX,),
    )
    for row in rows:
        for addr in json.loads(row["addrs"]):
            book.add_addr(addr)
    return len(rows)


async def forget(db: Database, peer_id: str) -> None:
    await db.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))


def unsaved(peer: Peer) -> bool:
    """Whether ``peer``'s row in sqlite is missing, out of date, or last written long ago."""
    if peer.saved is None:
        return True
    addrs, roles, saved_ms = peer.saved
    changed = addrs != tuple(peer.addrs) or roles != tuple(peer.roles)
    return changed or peer.last_seen_ms - saved_ms >= RESAVE_MS


async def remember(db: Database, peer: Peer) -> None:
    """Writes ``peer``'s row; its first write this run may add a row, so the table is then
    trimmed to the rows :func:`load_remembered` reads (the rest would never be read)."""
    new = peer.saved is None
    peer.saved = (tuple(peer.addrs), tuple(peer.roles), peer.last_seen_ms)
    await db.execute(
        "INSERT INTO peers(peer_id, addrs, roles, last_seen_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(peer_id) DO UPDATE SET addrs = excluded.addrs, roles = excluded.roles, "
        "last_seen_ms = excluded.last_seen_ms",
        (peer.peer_id, json.dumps(peer.addrs), json.dumps(peer.roles), peer.last_seen_ms),
    )
    if new:
        await db.execute(
            "DELETE FROM peers WHERE peer_id NOT IN (SELECT peer_id FROM peers "
            "ORDER BY last_seen_ms DESC, peer_id LIMIT ?)",
            (REMEMBER_MAX,),
        )
