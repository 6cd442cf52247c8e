"""Discovery inside real nodes (in this test's trio loop): the DHT's routing tables fed by
connections, roles provided, a peer the node has no address for found through the DHT; and
nodes joined over QUIC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from config import Settings
from config.schema import NodeSettings, P2pSettings
from node import identity
from node.api import Request
from node.daemon import NodeContext, run_node
from node.discovery import discovery_routes, locate
from node.home import Home
from node.network import Network

TIMEOUT_S = 40
Start = Callable[..., Awaitable[Network]]


async def until(check: Callable[[], bool]) -> None:
    """Polls a condition the node offers no event for (the caller bounds it with fail_after)."""
    while not check():
        await trio.sleep(0.05)


def settings(roles: tuple[str, ...], bootstrap: tuple[str, ...], quic: bool) -> Settings:
    return Settings(
        node=NodeSettings(roles=roles),
        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=bootstrap, quic=quic),
    )


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    async with trio.open_nursery() as nursery:

        async def start_node(
            name: str, *roles: str, bootstrap: tuple[str, ...] = (), quic: bool = False
        ) -> Network:
            home = Home(tmp_path / name)
            identity.save(home, identity.NodeKeys.generate(), passphrase=None)
            home.ensure_token()
            keys = identity.load(home, lambda: None)
            conf = settings(roles or ("requester",), bootstrap, quic)
            ctx: NodeContext = await nursery.start(
                lambda task_status: run_node(
                    home, conf, keys, handle_signals=False, task_status=task_status
                )
            )
            assert ctx.network is not None
            return ctx.network

        yield start_node
        nursery.cancel_scope.cancel()


def dht_size(net: Network) -> int:
    return 0 if net.dht is None else net.dht.size


async def test_a_peer_without_known_addresses_is_found_through_the_dht(start: Start) -> None:
    with trio.fail_after(TIMEOUT_S):
        hub = await start("hub")
        a = await start("a", bootstrap=(hub.host.addrs[0],))
        c = await start("c", "worker", bootstrap=(hub.host.addrs[0],))
        await until(lambda: dht_size(a) > 0 and dht_size(hub) >= 2)
        # Forget c's addresses (as if its hello never reached a): only the DHT can say.
        a.book.peers.pop(c.host.peer_id, None)
        addrs = await locate(a, c.host.peer_id)
        assert addrs and all(x.endswith(f"/p2p/{c.host.peer_id}") for x in addrs)
        assert a.book.peers[c.host.peer_id].addrs == addrs  # learned into the peer book


async def test_workers_are_found_as_providers_of_their_role(start: Start) -> None:
    with trio.fail_after(TIMEOUT_S):
        hub = await start("hub")
        worker = await start("w", "worker", bootstrap=(hub.host.addrs[0],))
        asker = await start("r", bootstrap=(hub.host.addrs[0],))
        await until(lambda: dht_size(asker) > 0)
        route = discovery_routes(asker.ctx)[("GET", "/v1/dht/providers")]

        async def providers() -> list[str]:
            body = await route(Request("GET", "/v1/dht/providers", "role=worker", b""))
            return [p["peer_id"] for p in body["providers"]]

        while worker.host.peer_id not in await providers():
            await trio.sleep(0.2)  # the worker provides once its routing table is fed


async def test_nodes_with_quic_join_over_quic(start: Start) -> None:
    with trio.fail_after(TIMEOUT_S):
        first = await start("q1", quic=True)
        quic_addr = next(a for a in first.host.addrs if "/quic-v1/" in a)
        assert quic_addr in first.announced_addrs()
        second = await start("q2", quic=True, bootstrap=(quic_addr,))
        await until(lambda: first.host.peer_id in second.host.connected_peers())
        conns = second.host.libp2p.get_network().connections
        (conn,) = [
            c for peer, cs in conns.items() if peer.to_base58() == first.host.peer_id for c in cs
        ]
        assert all("/quic-v1" in str(a) for a in conn.get_transport_addresses())
