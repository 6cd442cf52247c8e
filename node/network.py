"""The node's network: one libp2p host, gossip, peer discovery and the worker pool.

Every node, whatever its roles, runs this service: it announces itself (``node.hello`` on the
``nodes`` topic), keeps the peer book and the pool (``pool.presence`` on ``presence``: the
order book), and dials bootstrap, remembered and announced peers with backoff. A worker also
publishes its presence. Announcements repeat every ``p2p.announce_interval_s`` because gossip
is lossy; a peer silent for ``p2p.offline_after_s`` counts as offline.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import trio

from consensus.envelope import new_nonce, seal_body
from consensus.kinds import Hello, Ping, Registry, Wei
from consensus.market.messages import MARKET_KINDS
from consensus.pool import GpuOffer, Pool, Presence, PresenceSeen, WorkerChanged
from consensus.scores import PeerScores
from consensus.settlement.messages import SETTLEMENT_KINDS
from consensus.verify.messages import VERIFY_KINDS
from node import __version__, rtt
from node.blocks import restore_blocks
from node.discovery import run_discovery
from node.peerbook import (
    FORGET_AFTER_MS,
    Peer,
    PeerBook,
    forget,
    load_remembered,
    remember,
    unsaved,
)
from node.senders import DeclaredRoles
from p2p.channel_pool import ChannelPool
from p2p.dht import Dht
from p2p.gate import OPERATOR
from p2p.gossip import Gossip, Message, open_gossip, topic_name
from p2p.host import DialError, Host, open_host
from p2p.relay import Relay, is_circuit
from p2p.validation import EnvelopeValidator

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext

log = logging.getLogger(__name__)

NODES, PRESENCE = topic_name("nodes"), topic_name("presence")
REGISTRY = Registry([Hello, Ping, Presence, *MARKET_KINDS, *SETTLEMENT_KINDS, *VERIFY_KINDS])
TOPICS = {NODES: frozenset({Hello.KIND}), PRESENCE: frozenset({Presence.KIND})}
DIAL_TIMEOUT_S = 10
TARGET_CONNECTIONS = 8  # enough for a healthy gossip mesh (degree 6) without dialing everyone


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Network:
    """What the rest of the node (API, roles) uses of the network."""

    ctx: NodeContext
    host: Host
    gossip: Gossip
    scores: PeerScores
    book: PeerBook
    pool: Pool
    validator: EnvelopeValidator
    run_id: bytes = field(default_factory=lambda: os.urandom(8))
    seq: int = 0
    # (status, free GPUs) for presence; set by the worker's market service.
    presence_source: Callable[[], tuple[str, int]] | None = None
    # (GPU class, count, VRAM MB) from GPU discovery; set by the worker's market service.
    offer: tuple[str, int, int] = ("cpu", 1, 0)
    score: int = 0  # the benchmark score the worker bids with; set by its market service
    dht: Dht | None = None  # set by node.discovery when p2p.dht is on
    relay: Relay | None = None  # set by node.discovery
    circuit_addrs: list[str] = field(default_factory=list)  # through relays that reserved us
    foreign: dict[str, str] = field(default_factory=dict)  # peers of other networks: their name
    target_connections: int = TARGET_CONNECTIONS
    # Request streams kept open per peer and protocol (LiveNet's ``keep``): run_network runs it.
    channels: ChannelPool = field(init=False)
    # set, then replaced, per new peer, or one whose roles or chain account changed
    discovered: trio.Event = field(default_factory=trio.Event)
    rtt_measured: trio.Event = field(default_factory=trio.Event)  # the same, per ping round
    # With chain settlement, the peers (and us) staked as sentries (node.chain.sentry_set);
    # None: not checked, every peer that says it is a sentry counts.
    staked_sentries: set[str] | None = None
    _dial_now: trio.Event = field(default_factory=trio.Event)
    _connected: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.channels = ChannelPool(self.host)

    @property
    def p2p(self) -> Any:
        return self.ctx.settings.p2p

    def peers_view(self) -> list[dict[str, Any]]:
        """Every peer we know, are connected to, or have penalised (banned ones included)."""
        now, connected = now_ms(), set(self.host.connected_peers())
        offline_after = self.p2p.offline_after_s * 1000
        known = dict(self.book.peers)
        blocked = {b.peer_id: b for b in self.host.gate.blocks() if b.source == OPERATOR}
        others = connected | set(self.scores.peers()) | set(blocked) | set(self.foreign)
        for peer_id in others - known.keys():
            known[peer_id] = Peer(peer_id, [])
        return [
            {
                "peer_id": p.peer_id,
                "addrs": p.addrs,
                "roles": p.roles,
                "version": p.version,
                "connected": p.peer_id in connected,
                "online": self.book.online(p, now, offline_after) or p.peer_id in connected,
                "last_seen_ms": p.last_seen_ms,
                "rtt_ms": p.rtt_ms,
                "score": self.scores.score(p.peer_id, now),
                "banned": self.scores.banned(p.peer_id, now),
                "last_fault": self.scores.last_reason(p.peer_id),
                "blocked": p.peer_id in blocked,
                "blocked_until_ms": blocked[p.peer_id].until_ms if p.peer_id in blocked else None,
                "other_network": self.foreign.get(p.peer_id),
            }
            for p in sorted(known.values(), key=lambda p: p.peer_id)
        ]

    def market_view(self) -> list[dict[str, Any]]:
        return [
            {
                "peer_id": w.peer_id,
                "status": w.status,
                "online": w.online,
                "blocked": self.host.gate.blocked(w.peer_id),
                "region": w.presence.region,
                "name": w.presence.name,
                "capacity": w.presence.capacity,
                "score": w.presence.score,
                "offers": [
                    {
                        "gpu_class": o.gpu_class,
                        "count": o.count,
                        "vram_mb": o.vram_mb,
                        "price_wei_per_s": str(o.price_wei_per_s),
                    }
                    for o in w.presence.offers
                ],
                "last_seen_ms": w.last_seen_ms,
                "rtt_ms": self.book.peers[w.peer_id].rtt_ms
                if w.peer_id in self.book.peers
                else None,
            }
            for w in self.pool.workers()
        ]

    def announced_addrs(self) -> list[str]:
        """Where others can dial us: ``p2p.announce`` first (an address the operator knows is
        reachable from outside), then our listen addresses (0.0.0.0 expanded to interface
        IPs), then circuits through relays."""
        out = [f"{addr}/p2p/{self.host.peer_id}" for addr in self.p2p.announce]
        for addr in self.host.addrs:
            if "/ip4/0.0.0.0/" not in addr:
                out.append(addr)
                continue
            for ip in _interface_ipv4s():
                out.append(addr.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/"))
        return out + self.circuit_addrs  # relayed last: direct paths are tried first

    async def announce(self) -> None:
        """Publishes our hello and, on a worker, our presence."""
        expires = now_ms() + 3 * self.p2p.announce_interval_s * 1000
        roles = list(self.ctx.settings.node.roles)
        hello = Hello(expires_ms=expires, nonce=new_nonce(), roles=roles, version=__version__,
                      listen=self.announced_addrs(), **self._chain_fields())  # fmt: skip
        await self.gossip.publish(NODES, seal_body(self.ctx.keys.signing_key, hello))
        if "worker" in roles:
            self.seq += 1
            await self.gossip.publish(
                PRESENCE, seal_body(self.ctx.keys.signing_key, self._presence(expires))
            )

    def _chain_fields(self) -> dict[str, bytes]:
        """Our chain account and its binding, once the node settles on chain."""
        if self.ctx.chain is None:
            return {}
        address, binding = self.ctx.keys.chain_binding
        return {"chain_address": address, "binding": binding}

    def _presence(self, expires_ms: int) -> Presence:
        worker = self.ctx.settings.worker
        gpu_class, count, vram_mb = self.offer
        offer = GpuOffer(gpu_class=gpu_class, count=count, vram_mb=vram_mb,
                         price_wei_per_s=Wei(worker.price_wei_per_s))  # fmt: skip
        status, capacity = (
            ("available", 1) if self.presence_source is None else self.presence_source()
        )
        return Presence(
            expires_ms=expires_ms, nonce=new_nonce(), run_id=self.run_id, seq=self.seq,
            status=status, offers=[offer], capacity=capacity, region=worker.region,
            name=self.ctx.settings.node.name, listen=self.announced_addrs(), score=self.score,
        )  # fmt: skip

    async def announce_loop(self) -> None:
        """Announces every interval, and soon after a new peer can hear it: a hello sent
        before a neighbour's subscription reached us went nowhere, and without a repeat that
        neighbour would not know our roles (a worker would refuse its sentry) for an interval.
        """
        while True:
            heard_by = self.gossip.topic_peers(NODES)
            await self.announce()
            with trio.move_on_after(self.p2p.announce_interval_s):
                await self._new_listener(heard_by)
            await trio.sleep(1.0)  # pacing: at most one announcement a second

    async def _new_listener(self, heard_by: frozenset[str]) -> None:
        """Returns when a peer not in ``heard_by`` subscribes to hellos, on a new connection,
        or when a worker's presence changes. py-libp2p signals no new subscriptions, so they
        are looked for each second (a set comparison)."""
        while self.gossip.topic_peers(NODES) <= heard_by:
            with trio.move_on_after(1.0):
                await self._connected.wait()
                return

    async def follow_nodes(self, inbox: trio.MemoryReceiveChannel[Message]) -> None:
        async for msg in inbox:
            body = msg.opened.body
            if msg.origin == self.host.peer_id or not isinstance(body, Hello):
                continue
            before = self.book.peers.get(msg.origin)
            known = before is not None and before.last_seen_ms > 0
            said = None if before is None else (before.roles, before.chain)
            chain = (body.chain_address, body.binding) if body.chain_address else None
            peer = self.book.heard(msg.origin, body.listen, body.roles, body.version, now_ms(),
                                   chain=chain)  # fmt: skip
            if unsaved(peer):
                await remember(self.ctx.db, peer)
            if not known:
                log.info("peer discovered", extra={"peer": msg.origin, "roles": body.roles})
                self._wake_dialer()
            if not known or said != (peer.roles, peer.chain):  # e.g. its chain came up
                self.discovered.set()
                self.discovered = trio.Event()

    async def follow_pool(self, inbox: trio.MemoryReceiveChannel[Message]) -> None:
        """Feeds the pool machine: presence messages in, deadlines for offline marking."""
        while True:
            deadline = self.pool.next_deadline()
            timeout = 3600.0 if deadline is None else max(0.0, (deadline - now_ms()) / 1000)
            with trio.move_on_after(timeout):
                msg = await inbox.receive()
                if isinstance(msg.opened.body, Presence):
                    self._log(self.pool.handle(PresenceSeen(msg.origin, msg.opened.body), now_ms()))
            self._log(self.pool.on_tick(now_ms()))

    def _log(self, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, WorkerChanged):
                log.info(
                    "worker status",
                    extra={"peer": effect.peer_id, "old": effect.old, "new": effect.new},
                )

    def presence_changed(self) -> None:
        """Announces now rather than at the next interval (a worker became busy or free)."""
        self._connected.set()
        self._connected = trio.Event()

    async def connections_changed(self) -> None:
        """Returns when this node next gains a connection (or a worker's presence changes)."""
        await self._connected.wait()

    def learn(self, addrs: list[str], source: str) -> None:
        """Takes dialable addresses found by mDNS, the DHT or a relay into the peer book.

        They are dialled like bootstrap peers (with backoff); the peer is remembered once it
        has announced itself over gossip.
        """
        new = False
        for addr in addrs:
            known = self.book.peers.get(addr.rsplit("/p2p/", 1)[-1])
            new |= known is None or addr not in known.addrs
            self.book.add_addr(addr)
        if new:
            log.info("peer addresses learned", extra={"source": source, "addrs": addrs})
            self._wake_dialer()

    def _wake_dialer(self) -> None:
        self._dial_now.set()
        self._dial_now = trio.Event()

    async def dial_loop(self) -> None:
        """Keeps up to TARGET_CONNECTIONS connections, dialing due peers with backoff."""
        while True:
            connected = set(self.host.connected_peers())
            now = now_ms()
            self.book.lasting(connected, now)
            banned = {p for p in self.book.peers if self.host.gate.blocked(p)}  # bans too
            banned |= self.foreign.keys()
            for peer in self.book.due(now, connected, banned)[
                : max(0, TARGET_CONNECTIONS - len(connected))
            ]:
                await self._dial(peer)
            with trio.move_on_after(1.0):
                await self._dial_now.wait()

    async def refuse_other_networks(self) -> None:
        """Hangs up on peers of other networks and forgets them, so they are not redialled
        (until a restart re-reads a bootstrap list that names them, or they join ours). Their
        subscriptions say which network they are on; py-libp2p signals no subscriptions, so
        they are looked at each second (a scan of a dict)."""
        while True:
            for peer_id in self.foreign.keys() & self.gossip.topic_peers(NODES):
                del self.foreign[peer_id]  # restarted on our network, and dialled us
            for peer_id, network in self.gossip.foreign_peers().items():
                if peer_id not in self.foreign:
                    log.warning(
                        "peer of another network, hanging up",
                        extra={"peer": peer_id, "network": network, "ours": self.p2p.network},
                    )
                self.foreign[peer_id] = network
                self.book.peers.pop(peer_id, None)
                await forget(self.ctx.db, peer_id)
                await self.host.disconnect(peer_id)
            await trio.sleep(1.0)  # polling: nothing to wait on

    async def _dial(self, peer: Any) -> None:
        started = time.monotonic()
        for addr in peer.addrs:
            try:
                with trio.fail_after(DIAL_TIMEOUT_S):
                    if is_circuit(addr) and self.relay is not None:
                        await self.relay.dial(addr)  # libp2p's own dial drops circuits
                    else:
                        await self.host.connect(addr)
            except (DialError, ValueError, trio.TooSlowError) as exc:
                log.debug(
                    "dial failed", extra={"peer": peer.peer_id, "addr": addr, "error": str(exc)}
                )
                continue
            rtt = int((time.monotonic() - started) * 1000)
            self.book.dialed(peer, True, now_ms(), rtt)
            log.info("connected", extra={"peer": peer.peer_id, "addr": addr})
            self._connected.set()
            self._connected = trio.Event()
            return
        self.book.dialed(peer, False, now_ms())


def _interface_ipv4s() -> list[str]:
    ips = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not ipaddress.ip_address(a.address).is_link_local:
                ips.append(a.address)
    return ips or ["127.0.0.1"]


async def run_network(
    ctx: NodeContext, *, task_status: TaskStatus[Network] = trio.TASK_STATUS_IGNORED
) -> None:
    """Runs the network service until cancelled; reports the Network once it listens."""
    p2p = ctx.settings.p2p
    seed = bytes(ctx.keys.signing_key)
    async with open_host(
        seed, p2p.listen, max_connections=p2p.max_connections, quic=p2p.quic
    ) as host:
        blocked = await restore_blocks(ctx.db, host)  # first: we already listen
        scores = PeerScores()
        validator = EnvelopeValidator(REGISTRY, TOPICS, policy=DeclaredRoles())
        async with open_gossip(host, validator, scores, network=p2p.network) as gossip:
            offline_ms = p2p.offline_after_s * 1000
            # a silent peer is forgotten after the longer of an hour and 10 offline periods
            forget_ms = max(FORGET_AFTER_MS, 10 * offline_ms)
            book = PeerBook(host.peer_id, p2p.bootstrap, forget_after_ms=forget_ms)
            pool = Pool(offline_ms, 10 * offline_ms)
            net = Network(ctx, host, gossip, scores, book, pool, validator)
            remembered = await load_remembered(ctx.db, book)
            nodes_inbox = await gossip.subscribe(NODES)
            presence_inbox = await gossip.subscribe(PRESENCE)
            async with trio.open_nursery() as nursery:
                await nursery.start(net.channels.run)
                nursery.start_soon(net.follow_nodes, nodes_inbox)
                rtt.serve_pings(net)
                nursery.start_soon(rtt.measure_loop, net)
                nursery.start_soon(net.follow_pool, presence_inbox)
                nursery.start_soon(net.dial_loop)
                nursery.start_soon(net.refuse_other_networks)
                nursery.start_soon(net.announce_loop)
                await nursery.start(run_discovery, net)
                log.info(
                    "p2p listening",
                    extra={
                        "network": p2p.network,
                        "addrs": host.addrs,
                        "remembered_peers": remembered,
                        "blocked": blocked,
                    },
                )
                task_status.started(net)
