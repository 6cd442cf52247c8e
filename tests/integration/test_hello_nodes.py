"""Hello between two real nodes (this test's trio loop, libp2p on 127.0.0.1): a node that hears
a new neighbour's hello answers with its own at once, so the newcomer knows its roles without
waiting for the next announcement (20 minutes here). The CI failure this guards against: a worker
that never learnt its sentry refused that sentry's probes and dropped its reports."""

from __future__ import annotations

from pathlib import Path

import trio

from config import Settings
from config.schema import NodeSettings, P2pSettings
from node import identity
from node.daemon import NodeContext, run_node
from node.home import Home
from node.network import NODES, Network

TIMEOUT_S = 60
LONG_S = 1200  # the longest interval: an announcement lives three, at most an hour


async def start(nursery: trio.Nursery, root: Path, roles: tuple[str, ...],
                bootstrap: tuple[str, ...] = (), network: str = "main") -> NodeContext:  # fmt: skip
    home = Home(root)
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    conf = Settings(
        node=NodeSettings(roles=roles),
        p2p=P2pSettings(
            network=network,
            listen=("/ip4/127.0.0.1/tcp/0",),
            bootstrap=bootstrap,
            announce_interval_s=LONG_S,
            offline_after_s=2 * LONG_S,
        ),
    )
    keys = identity.load(home, lambda: None)
    ctx: NodeContext = await nursery.start(
        lambda task_status: run_node(
            home, conf, keys, handle_signals=False, task_status=task_status
        )
    )
    return ctx


async def aged_out(net: Network, topic: str) -> None:
    """Returns once gossip's cache no longer offers our messages on ``topic`` to newcomers."""
    cache = net.gossip.pubsub.router.mcache
    while cache.window(net.gossip.wire(topic)):
        await trio.sleep(0.2)  # a look per heartbeat's part: the cache signals nothing


async def hello_heard(net: Network, peer: str) -> list[str]:
    """The roles in ``peer``'s hello, once one reached ``net``."""
    while peer not in net.book.peers or net.book.peers[peer].last_seen_ms == 0:
        await net.discovered.wait()
    return list(net.book.peers[peer].roles)


async def test_a_new_neighbour_learns_an_old_nodes_roles_at_once(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT_S):
            old = await start(nursery, tmp_path / "old", ("sentry", "requester"))
            assert old.network is not None
            # The old node's first hello goes out before anyone is there to hear it, and ages
            # out of the window py-libp2p replays to a new subscriber.
            await old.network.gossip.wait_until(lambda stats: stats.published >= 1)
            await aged_out(old.network, NODES)
            new = await start(nursery, tmp_path / "new", ("requester",),
                              (old.network.host.addrs[0],))  # fmt: skip
            assert new.network is not None
            assert await hello_heard(old.network, new.keys.peer_id) == ["requester"]
            assert await hello_heard(new.network, old.keys.peer_id) == ["sentry", "requester"]
        nursery.cancel_scope.cancel()
