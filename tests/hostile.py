"""A hostile peer for tests: py-libp2p's raw pubsub with no validation, so it can send anything.

It writes through :class:`p2p.gossip.SerialPubsub` by default, so that what it sends arrives as
sent (plain Pubsub corrupts its own concurrent writes over 64 KiB) and the receiver's verdict
is about the message, not about a garbled stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import nacl.signing
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2p.gossip import SerialPubsub
from p2p.host import Host, open_host


@asynccontextmanager
async def hostile_peer(
    topics: Sequence[str], pubsub_class: type[Pubsub] = SerialPubsub
) -> AsyncIterator[tuple[Host, Pubsub, nacl.signing.SigningKey]]:
    """Yields its host, its pubsub (subscribed to ``topics``) and its own signing key."""
    seed = os.urandom(32)
    async with open_host(seed) as host:
        router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=6, degree_low=4, degree_high=12,
                           heartbeat_interval=1, adaptive_gossip_enabled=False)  # fmt: skip
        pubsub = pubsub_class(host.libp2p, router, strict_signing=True)
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                for topic in topics:
                    await pubsub.subscribe(topic)
                yield host, pubsub, nacl.signing.SigningKey(seed)
        finally:
            pubsub.seen_messages.stop()
