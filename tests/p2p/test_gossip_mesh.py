"""Each node's mesh stays near the degree we set (p2p.gossip switches the library scorer off).

With py-libp2p's own peer scorer at its defaults, "opportunistic grafting" takes every peer's
score of 0 as good enough and grafts it on each heartbeat, so every mesh fills up to
``degree_high`` and each message is received that many times over.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import trio
from libp2p.peer.id import ID

from p2p.gossip import GossipParams
from tests.p2p.test_gossip import WIRE_PRESENCE, honest_node


class Heartbeats:
    """Counts each router's mesh heartbeats so a test can wait for them instead of sleeping."""

    def __init__(self, routers: Sequence[Any]) -> None:
        self.counts = [0] * len(routers)
        self.changed = trio.Event()
        for i, router in enumerate(routers):
            router.mesh_heartbeat = self._counted(i, router.mesh_heartbeat)

    def _counted(self, i: int, inner: Any) -> Any:
        def mesh_heartbeat(*args: Any, **kwargs: Any) -> Any:
            self.counts[i] += 1
            self.changed.set()
            self.changed = trio.Event()
            return inner(*args, **kwargs)

        return mesh_heartbeat

    async def each(self, beats: int) -> None:
        """Waits until every router has run ``beats`` more heartbeats."""
        target = [count + beats for count in self.counts]
        while any(count < want for count, want in zip(self.counts, target, strict=True)):
            await self.changed.wait()


async def test_meshes_stay_near_the_degree_in_a_full_mesh_of_peers() -> None:
    params = GossipParams(degree=2, degree_low=1, degree_high=7)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(honest_node(params=params)) for _ in range(8)]
        for i, node in enumerate(nodes):
            for other in nodes[:i]:
                await node.host.connect(other.host.addrs[0])
        routers = [node.gossip.pubsub.router for node in nodes]
        heartbeats = Heartbeats(routers)
        with trio.fail_after(30):
            for node in nodes:
                for other in nodes:
                    if other is not node:
                        peer = ID.from_base58(other.host.peer_id)
                        await node.gossip.pubsub.wait_for_subscription(peer, WIRE_PRESENCE, 10)
            await heartbeats.each(3)
        sizes = [len(router.mesh[WIRE_PRESENCE]) for router in routers]
        # A node grafts `degree` peers only while its mesh is below degree_low (empty here),
        # and every graft is one edge counted at both ends: at most 2 * degree per node.
        assert all(sizes) and sum(sizes) <= 2 * params.degree * len(nodes), sizes
