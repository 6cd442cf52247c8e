"""Repairs the pubsub links py-libp2p 0.8.1 loses for good, so a peer never goes deaf to us.

Three failures leave two connected peers where gossip flows one way only, forever (each
reproduced in ``tests/p2p/test_gossip_links.py``); a worker then hears no demand while the
requester sees its presence, and every auction ends "none bid":

* Pubsub opens its outbound stream to a new peer once, and retries only on a swarm error or a
  closed stream; a failed protocol negotiation (a timeout while the other side's loop is
  stalled) is a host error it gives up on. The peer stays connected, out of ``peers``, and
  gets nothing from us.
* A subscription made while a new peer is being registered (after its hello was built, before
  it joins ``peers``) is in neither the hello nor the announcement to ``peers``, and nothing
  announces it again: that peer never learns we listen on the topic.
* When our stream to a peer dies, Pubsub forgets every topic that peer subscribed to, then
  reopens the stream; the peer's subscriptions came over its own stream, which is fine, so it
  never sends them again.

So, every ``interval_s``: a connected peer missing from ``peers`` gets its stream opened
again, and every peer is told our subscriptions once more. A repeated subscription changes
nothing at the receiver; the message carries no signed peer record, so it costs it no
signature check.
"""

from __future__ import annotations

import logging

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from p2p.host import Host

log = logging.getLogger(__name__)


async def keep_links(host: Host, pubsub: Pubsub, interval_s: float) -> None:
    """Runs until cancelled: relinks deaf peers and repeats our subscriptions.

    A peer that never speaks pubsub (a plain libp2p node) fails every relink: it is warned
    about once while it stays unlinked, then only at info level, not every ``interval_s``.
    """
    relinking: set[ID] = set()
    warned: set[ID] = set()

    async def relink(peer: ID) -> None:
        try:
            linked = await pubsub.ensure_peer_stream(peer, timeout=interval_s)
            log.info("pubsub stream reopened", extra={"peer": str(peer), "ok": linked})
        finally:
            relinking.discard(peer)

    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(interval_s)  # a period, not synchronisation
            deaf = unlinked(host, pubsub)
            warned &= deaf  # linked again (or gone): a later failure is news again
            for peer in deaf - relinking:
                level = logging.INFO if peer in warned else logging.WARNING
                log.log(level, "connected peer without a pubsub stream", extra={"peer": str(peer)})
                warned.add(peer)
                relinking.add(peer)
                nursery.start_soon(relink, peer)
            await repeat_subscriptions(pubsub)


def unlinked(host: Host, pubsub: Pubsub) -> set[ID]:
    """Peers we are connected to that Pubsub sends nothing to (and has not blacklisted)."""
    connected = {ID.from_base58(p) for p in host.connected_peers()}
    return {p for p in connected - set(pubsub.peers) if not pubsub.is_peer_blacklisted(p)}


async def repeat_subscriptions(pubsub: Pubsub) -> None:
    """Tells every pubsub peer the topics we are subscribed to."""
    if not pubsub.topic_ids or not pubsub.peers:
        return
    packet = rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in pubsub.topic_ids]
    )
    await pubsub.message_all_peers(packet.SerializeToString())
