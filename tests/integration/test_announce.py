"""What a node tells the network of itself: the addresses it announces, and a worker's
presence as soon as it changes (not at the next interval). Real nodes in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.pool import Presence
from node.network import PRESENCE
from tests.inprocess import start_node

pytestmark = pytest.mark.slow
PUBLIC = "/ip4/203.0.113.7/tcp/4001"  # a router's address, its port forwarded to us
LONG_S = 600  # announcements this far apart: only a change explains a presence sooner


async def test_announced_addresses_come_first_and_reach_peers(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first = await start_node(nursery, tmp_path / "a", announce=(PUBLIC,))
        second = await start_node(nursery, tmp_path / "b", bootstrap=first)
        assert first.network is not None and second.network is not None
        ours = f"{PUBLIC}/p2p/{first.keys.peer_id}"
        assert first.network.announced_addrs()[0] == ours
        with trio.fail_after(30):  # the hello carries it
            while ours not in (peer := second.network.book.peers[first.keys.peer_id]).addrs:
                await second.network.discovered.wait()
        assert peer.addrs[0] == ours
        nursery.cancel_scope.cancel()


async def test_a_workers_changed_status_goes_out_at_once(tmp_path: Path) -> None:
    slow = {"announce_interval_s": LONG_S, "offline_after_s": 2 * LONG_S}
    async with trio.open_nursery() as nursery:
        watcher = await start_node(nursery, tmp_path / "a", **slow)
        worker = await start_node(nursery, tmp_path / "w", roles=("worker",), bootstrap=watcher,
                                  **slow)  # fmt: skip
        assert watcher.network is not None and worker.network is not None
        inbox = await watcher.network.gossip.subscribe(PRESENCE)
        with trio.fail_after(30):
            await next_status(inbox, worker.keys.peer_id)  # the first, on joining
            worker.network.presence_source = lambda: ("busy", 0)
            worker.network.presence_changed()
            assert await next_status(inbox, worker.keys.peer_id) == "busy"
            await trio.testing.wait_all_tasks_blocked()  # the pool's task has taken it too
        [row] = watcher.network.market_view()
        assert (row["peer_id"], row["status"], row["capacity"]) == (worker.keys.peer_id, "busy", 0)
        nursery.cancel_scope.cancel()


async def next_status(inbox: trio.MemoryReceiveChannel, peer_id: str) -> str:  # type: ignore[type-arg]
    async for msg in inbox:
        if msg.origin == peer_id and isinstance(msg.opened.body, Presence):
            return msg.opened.body.status
    raise AssertionError("presence channel closed")
