"""GossipSub with our parameters, our validation outcomes, peer scores and paced publishing.

py-libp2p's defaults silently lose messages (see the shared libp2p notes); each choice here
answers one of them, and each has a regression test in ``tests/p2p/test_gossip.py``:

* every router parameter is explicit: heartbeat 1 s (default 120 s), adaptive gossip off (it
  stretches the heartbeat to 30-60 s), meshsub/1.1 only (v1.2's IDONTWANT doubles CPU);
* the library's own peer scorer is switched off: with its default parameters (every weight 0,
  every threshold -inf) it never gates anything, yet its "opportunistic grafting" finds every
  peer at score 0 good enough and grafts it, so each mesh grows to ``degree_high`` and a
  message arrives up to twice as often as it should (``tests/p2p/test_gossip_mesh.py``);
  :class:`consensus.scores.PeerScores` is the score that counts;
* the per-forwarder spam limit (default 10 msg/s, also applied to our own publishes) is set on
  purpose, and our own publishes are paced below it through one outbox;
* a topic validator returns only a bool, so Accept / Ignore / Reject and the reason live in
  :class:`p2p.validation.EnvelopeValidator`; only Reject costs the forwarder score, and a peer
  that falls below the ban threshold is blocked at the host for the ban (:mod:`p2p.gate`);
* the pubsub blacklist follows the host's blocked peers (operator blocks and bans alike), so
  gossip forwarded by or originating from a blocked peer is dropped;
* libp2p drops messages when a subscription's 32-slot channel is full, so one task per topic
  drains it at once into our own, larger inbox;
* gossip is lossy: :meth:`Gossip.announce` re-broadcasts until the caller confirms receipt;
* the seen-cache thread each Pubsub starts is stopped on exit;
* Pubsub's stream handler lets a protobuf ``DecodeError`` (one corrupt frame) escape, which
  kills the host and the node: it is re-registered behind a guard that drops only that stream;
* Pubsub writes to a peer's stream from several tasks (publish, forward, heartbeat), and Yamux
  sends a write over 64 KiB as several frames without holding its lock between them, so two
  concurrent RPCs interleave and corrupt the stream: :class:`SerialPubsub` writes one RPC at a
  time per stream;
* blacklisting a connected peer resets its stream and then deletes it from ``peers``, but the
  reset wakes the reader, which deletes it first: the ``KeyError`` killed the node whenever a
  banned peer's connection closed at that moment (:class:`SerialPubsub` tolerates it);
* a failed stream setup or a lost subscription leaves a connected peer deaf to us for good:
  :func:`p2p.gossip_links.keep_links` relinks it and repeats our subscriptions.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from consensus.envelope import Opened
from consensus.scores import PeerScores
from p2p import records
from p2p.gate import SCORE, Block
from p2p.gossip_links import keep_links
from p2p.host import Host
from p2p.validation import EnvelopeValidator, Verdict, wall_clock_ms

log = logging.getLogger(__name__)

TOPIC_ROOT = "/idlegrid/1/"
DEFAULT_NETWORK = "main"


def topic_name(name: str, shard: str | None = None) -> str:
    """``presence`` -> ``/idlegrid/1/presence``; ``jobs``, ``a100-80g`` -> ``.../jobs/a100-80g``."""
    return TOPIC_ROOT + name + (f"/{shard}" if shard else "")


def wire_topic(topic: str, network: str) -> str:
    """On the wire: ``/idlegrid/1/presence`` -> ``/idlegrid/1/main/presence``.

    Services name topics without the network; the network goes in here, at the one place
    that talks to pubsub, so two networks whose nodes meet (one LAN, one DHT, a bootstrap
    list copied from the wrong place) never see each other's jobs, bids or payments.
    """
    if not topic.startswith(TOPIC_ROOT):
        raise ValueError(f"topic {topic!r} does not start with {TOPIC_ROOT!r}")
    return f"{TOPIC_ROOT}{network}/{topic[len(TOPIC_ROOT) :]}"


def network_of(wire: str) -> str | None:
    """The network in a wire topic (``/idlegrid/1/<network>/...``); None for any other topic."""
    if not wire.startswith(TOPIC_ROOT):
        return None
    network, sep, _ = wire[len(TOPIC_ROOT) :].partition("/")
    return network if sep and network else None


@dataclass(frozen=True)
class GossipParams:
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval_s: int = 1
    fanout_ttl_s: int = 60
    gossip_window: int = 3
    gossip_history: int = 5
    # Per forwarder and topic; above the library's 10/s so a busy honest relay is not cut off.
    spam_limit_per_s: float = 100.0
    # Our own publishes, all topics together: well below every peer's spam limit.
    publish_per_s: float = 20.0
    seen_ttl_s: int = 120
    max_rpc_bytes: int = 1 << 20
    inbox_size: int = 1024
    outbox_size: int = 1024
    # How often deaf peers are relinked and our subscriptions repeated (p2p.gossip_links).
    relink_interval_s: float = 10.0


@dataclass(frozen=True)
class Message:
    """A validated gossip message: the envelope's typed body and who signed it."""

    topic: str
    opened: Opened

    @property
    def origin(self) -> str:
        return self.opened.signer_peer_id


@dataclass
class GossipStats:
    """Counters a test or benchmark can wait on: every change wakes :meth:`wait_until`."""

    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    inbox_dropped: int = 0
    published: int = 0
    bans: int = 0
    disconnected: int = 0
    corrupt_streams: int = 0
    _changed: trio.Event = field(default_factory=trio.Event, repr=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def count(self, counter: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[GossipStats], bool]) -> None:
        """Waits until ``predicate(self)`` holds; woken by every change, never by polling."""
        while not predicate(self):
            await self._changed.wait()


class Gossip:
    """A node's gossip: subscribe, publish, announce. Made by :func:`open_gossip`."""

    def __init__(
        self,
        host: Host,
        pubsub: Pubsub,
        *,
        validator: EnvelopeValidator,
        scores: PeerScores,
        params: GossipParams,
        nursery: trio.Nursery,
        stats: GossipStats | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        network: str = DEFAULT_NETWORK,
    ) -> None:
        self.host, self.pubsub, self.validator, self.scores = host, pubsub, validator, scores
        self.network = network
        self.params, self.stats, self.clock = params, stats or GossipStats(), clock
        self._nursery = nursery
        self._outbox, self._outbox_recv = trio.open_memory_channel[tuple[str, bytes]](
            params.outbox_size
        )
        self._bans, self._bans_recv = trio.open_memory_channel[str](256)
        self._inboxes: dict[str, list[trio.MemorySendChannel[Message]]] = {}  # per topic
        # Validated envelopes waiting for delivery, keyed like libp2p's message ids.
        self._validated: OrderedDict[tuple[bytes, bytes], Opened] = OrderedDict()

    async def subscribe(self, topic: str) -> trio.MemoryReceiveChannel[Message]:
        """Joins ``topic``; validated messages arrive on the returned channel, ours included.

        Every subscriber of a topic gets every message: py-libp2p hands a second subscriber
        the first one's channel, so two services of one node on the same topic (a sentry's
        verifier and its slasher) would each see only part of it.
        """
        send, receive = trio.open_memory_channel[Message](self.params.inbox_size)
        inboxes = self._inboxes.get(topic)
        if inboxes is not None:
            inboxes.append(send)
            return receive
        self._inboxes[topic] = [send]
        self.pubsub.set_topic_validator(self.wire(topic), self._validator_for(topic), False)
        subscription = await self.pubsub.subscribe(self.wire(topic))
        self._nursery.start_soon(self._drain, topic, subscription)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        """Queues a sealed envelope for paced publishing; waits only while the outbox is full."""
        await self._outbox.send((topic, data))

    def topic_peers(self, topic: str) -> frozenset[str]:
        """The peers whose subscription to ``topic`` we have heard (ours not included)."""
        peers = self.pubsub.peer_topics.get(self.wire(topic), ())
        return frozenset(p.to_base58() for p in peers)

    def foreign_peers(self) -> dict[str, str]:
        """Peers whose idlegrid subscriptions are all on another network, with that network.

        Such a peer shares no topic with us, so nothing it says can reach us, nor ours it:
        the connection is useless (a bootstrap list copied from another network).
        """
        ours: set[ID] = set()
        theirs: dict[ID, str] = {}
        for wire, peers in self.pubsub.peer_topics.items():
            network = network_of(wire)
            if network is None:
                continue
            for peer in peers:
                if network == self.network:
                    ours.add(peer)
                else:
                    theirs[peer] = network
        return {peer.to_base58(): net for peer, net in theirs.items() if peer not in ours}

    def wire(self, topic: str) -> str:
        """``topic`` as pubsub knows it on this node's network (see :func:`wire_topic`)."""
        return wire_topic(topic, self.network)

    async def announce(
        self, topic: str, data: bytes, confirmed: trio.Event, every_s: float, max_times: int
    ) -> bool:
        """Publishes ``data`` again every ``every_s`` until ``confirmed`` is set.

        Receivers drop the repeats as replays (IGNORE, no blame), so repetition is safe.

        Returns:
            True if confirmed, False if ``max_times`` publishes went unconfirmed.
        """
        for _ in range(max_times):
            await self.publish(topic, data)
            with trio.move_on_after(every_s):
                await confirmed.wait()
            if confirmed.is_set():
                return True
        return False

    async def wait_until(self, predicate: Callable[[GossipStats], bool]) -> None:
        """Waits until ``predicate(stats)`` holds; woken by every change, never by polling."""
        await self.stats.wait_until(predicate)

    def _count(self, verdict: Verdict) -> None:
        counters = {Verdict.ACCEPT: "accepted", Verdict.REJECT: "rejected"}
        self.stats.count(counters.get(verdict, "ignored"))

    def _validator_for(self, topic: str) -> Callable[[ID, rpc_pb2.Message], bool]:
        own = self.host.peer_id

        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            origin = ID(msg.from_id).to_base58()
            result = self.validator(topic, origin, msg.data)
            if result.verdict is Verdict.ACCEPT and result.opened is not None:
                self._remember(msg, result.opened)
                self._count(Verdict.ACCEPT)
                return True
            sender = forwarder.to_base58()
            at_fault = origin if result.blame_origin else sender
            if result.verdict is Verdict.REJECT and at_fault != own:
                self.penalise(at_fault, result.reason)
            self._count(result.verdict)
            log.debug("gossip %s from %s: %s", result.verdict.value, sender, result.reason)
            return False

        return validate

    def _remember(self, msg: rpc_pb2.Message, opened: Opened) -> None:
        self._validated[(msg.from_id, msg.seqno)] = opened
        while len(self._validated) > 4 * self.params.inbox_size:
            self._validated.popitem(last=False)

    def penalise(self, peer_id: str, reason: str, what: str = "rejected gossip") -> None:
        """Costs ``peer_id`` score for a fault of its own; bans it below the threshold.

        Also the way other protocols (a blob holder that served other bytes) blame a peer, so
        that one score, one ban and one gate cover every way a peer can misbehave.
        """
        outcome = self.scores.penalise(peer_id, reason, self.clock())
        log.info(what, extra={"peer": peer_id, "reason": reason, "score": outcome.score})
        if outcome.banned:
            self.stats.count("bans")
            now = self.host.gate.clock()
            until = now + self.scores.params.ban_ms
            self.host.gate.block(Block(peer_id, SCORE, now, until, f"peer score: {reason}"))
            self.pubsub.add_to_blacklist(ID.from_base58(peer_id))  # now, not on the next sync
            self._bans.send_nowait(peer_id)

    async def _drain(self, topic: str, subscription: Any) -> None:
        async for msg in subscription:
            opened = self._validated.pop((msg.from_id, msg.seqno), None)
            if opened is None:
                continue  # validated so long ago that we forgot it: treat as lost gossip
            for inbox in list(self._inboxes[topic]):
                try:
                    inbox.send_nowait(Message(topic, opened))
                except trio.WouldBlock:
                    self.stats.count("inbox_dropped")
                    log.warning("gossip inbox full, message dropped", extra={"topic": topic})
                except trio.BrokenResourceError:  # that subscriber has gone: the others stay
                    self._inboxes[topic].remove(inbox)

    async def _publish_loop(self) -> None:
        interval = 1.0 / self.params.publish_per_s
        async for topic, data in self._outbox_recv:
            await self.pubsub.publish(self.wire(topic), data)
            self.stats.count("published")
            await trio.sleep(interval)  # pacing, not synchronisation

    async def _ban_loop(self) -> None:
        """Disconnects banned peers (the gate already refuses them: see ``penalise``)."""
        async for peer_id in self._bans_recv:
            try:
                with trio.move_on_after(5):
                    await self.host.disconnect(peer_id)
            except Exception:  # the library's teardown can raise; a ban must not kill us
                log.exception("disconnecting banned peer failed", extra={"peer": peer_id})
            self.stats.count("disconnected")

    async def _blacklist_loop(self) -> None:
        """Keeps the pubsub blacklist equal to the host's blocked peers, bans included."""
        gate = self.host.gate
        while True:
            changed = gate.changed
            gate.expire()
            blocked = {ID.from_base58(p) for p in gate.blocked_peers()}
            listed = self.pubsub.get_blacklisted_peers()
            for peer in blocked - listed:
                self.pubsub.add_to_blacklist(peer)
            for peer in listed - blocked:
                self.pubsub.remove_from_blacklist(peer)
            next_ms = gate.next_expiry_ms()
            wait_s = 60.0 if next_ms is None else max(0.0, (next_ms - gate.clock()) / 1000)
            with trio.move_on_after(min(wait_s, 60.0) + 0.01):
                await changed.wait()


class SerialPubsub(Pubsub):
    """py-libp2p's Pubsub, made safe for concurrent writes and for banning (see the module doc).

    It writes one RPC at a time to each stream, and survives a blacklisted peer's teardown
    racing that peer's stream dying.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_locks: weakref.WeakKeyDictionary[INetStream, trio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        lock = self._write_locks.setdefault(stream, trio.Lock())
        async with lock:
            return await super().write_msg(stream, rpc_msg)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        # Upstream runs this as a pubsub service task, so an exception here stops pubsub, the
        # host and the node. While ``reset`` runs, the stream's reader notices and calls
        # ``_handle_dead_peer``, which removes the peer: whoever gets there second must not mind.
        stream = self.peers.get(peer_id)
        if stream is not None:
            with suppress(Exception):  # already gone is the outcome we want
                await stream.reset()
            self.peers.pop(peer_id, None)
        self._forget_all_subscriptions(peer_id)


def _router(params: GossipParams) -> GossipSub:
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=params.degree,
        degree_low=params.degree_low,
        degree_high=params.degree_high,
        time_to_live=params.fanout_ttl_s,
        gossip_window=params.gossip_window,
        gossip_history=params.gossip_history,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=params.heartbeat_interval_s,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=params.spam_limit_per_s,
    )
    router.scorer = None  # see the module doc: every use in the library checks for None
    return router


def _guard_pubsub_streams(host: Host, pubsub: Pubsub, stats: GossipStats) -> None:
    """Re-registers Pubsub's stream handler so that no frame from a peer can crash the node.

    ``Host.set_stream_handler`` already contains any exception to its stream; here we also
    tell Pubsub the peer's stream is gone, as it does itself for the errors it does catch. No
    blame: the corrupt frame may come from an honest peer's library.
    """

    async def handler(stream: INetStream) -> None:
        try:
            await pubsub.stream_handler(stream)
        except Exception as exc:
            peer = stream.muxed_conn.peer_id
            log.warning(
                "dropping a corrupt pubsub stream", extra={"peer": str(peer), "error": repr(exc)}
            )
            stats.count("corrupt_streams")
            with trio.CancelScope(shield=True):
                await stream.reset()
            pubsub._handle_dead_peer(peer)

    for protocol in pubsub.protocols:
        host.set_stream_handler(str(protocol), handler)


@asynccontextmanager
async def open_gossip(
    host: Host,
    validator: EnvelopeValidator,
    scores: PeerScores,
    params: GossipParams = GossipParams(),
    network: str = DEFAULT_NETWORK,
) -> AsyncIterator[Gossip]:
    """Runs GossipSub on ``host`` for the duration of the block; stops everything it started.

    ``network`` goes into every topic on the wire (:func:`wire_topic`).
    """
    records.install()
    router = _router(params)
    pubsub = SerialPubsub(
        host.libp2p,
        router,
        strict_signing=True,
        seen_ttl=params.seen_ttl_s,
        max_inbound_rpc_size=params.max_rpc_bytes,
    )
    stats = GossipStats()
    _guard_pubsub_streams(host, pubsub, stats)
    try:
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                gossip = Gossip(
                    host, pubsub, validator=validator, scores=scores, params=params,
                    nursery=nursery, stats=stats, network=network,
                )  # fmt: skip
                nursery.start_soon(gossip._publish_loop)
                nursery.start_soon(gossip._ban_loop)
                nursery.start_soon(gossip._blacklist_loop)
                nursery.start_soon(keep_links, host, pubsub, params.relink_interval_s)
                try:
                    yield gossip
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        # The seen-cache sweeps on a thread of its own that nothing else stops; stop() wakes
        # and joins it at once, so it is safe to call here even while being cancelled.
        pubsub.seen_messages.stop()
