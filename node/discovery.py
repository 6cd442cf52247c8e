"""Discovery beyond bootstrap peers and gossip: mDNS on the LAN, the Kademlia DHT, relays.

Each mechanism only finds addresses; :meth:`node.network.Network.learn` takes them into the
peer book, so a peer found here is dialled with backoff, scored, banned and remembered exactly
like a bootstrap peer.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import trio

from config.schema import ROLES
from node.api import ApiError, Request, Routes
from p2p.dht import open_dht
from p2p.mdns import interface_ipv4, open_mdns
from p2p.relay import open_relay

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext
    from node.network import Network

log = logging.getLogger(__name__)

DHT_INTERVAL_S: Final = 30.0  # routing table upkeep when no connection changes wake it sooner
REPROVIDE_S: Final = 3600.0  # provider records live 24 h in the library; renew well before
LOOKUP_TIMEOUT_S: Final = 20.0


def role_key(role: str, network: str) -> str:
    """The DHT name a node of ``role`` on ``network`` provides, so others find one without gossip.

    The network is in the name because one DHT can serve several networks (its routing is
    shared by whoever connects); a node only wants peers of its own.
    """
    return f"/idlegrid/1/{network}/role/{role}"


async def run_discovery(
    net: Network, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Runs every discovery mechanism turned on in config until cancelled."""
    p2p = net.p2p
    async with trio.open_nursery() as nursery:
        if p2p.mdns:
            await nursery.start(run_mdns, net, p2p.mdns_interface)
        if p2p.dht != "off":
            await nursery.start(run_dht, net, p2p.dht)
        await nursery.start(run_relay, net, p2p.relay_hop, p2p.relay_reserve)
        task_status.started()


def lan_addrs(addrs: list[str], ip: str) -> list[str]:
    """The addresses a LAN neighbour can dial: those on the mDNS interface's IP, else all."""
    on_ip = [a for a in addrs if f"/ip4/{ip}/" in a]
    if on_ip:
        return on_ip
    return [a for a in addrs if not _is_loopback(a)] or addrs


def _is_loopback(addr: str) -> bool:
    parts = addr.split("/")
    try:
        return len(parts) > 2 and ipaddress.ip_address(parts[2]).is_loopback
    except ValueError:
        return False


async def run_mdns(
    net: Network, interface: str, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Announces this node on ``interface`` and feeds neighbours heard there to the peer book."""
    addrs = lan_addrs(net.announced_addrs(), interface_ipv4(interface))
    async with open_mdns(net.host.peer_id, addrs, interface, net.p2p.network) as found:
        task_status.started()
        async for peer in found:
            net.learn(peer.addrs, "mdns")


async def run_dht(
    net: Network, mode: str, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keeps the DHT's routing table fed with our connections and our roles provided.

    When the node has fewer connections than it wants, it also asks the DHT for providers of
    every role and learns them (how a node finds the network beyond its bootstrap peers).
    """
    async with open_dht(net.host, mode) as dht:
        net.dht = dht
        task_status.started()
        provided_at: float | None = None
        looked_up_at = -DHT_INTERVAL_S
        while True:
            await dht.add_connected()
            now = trio.current_time()
            if dht.size and (provided_at is None or now - provided_at > REPROVIDE_S):
                provided_at = now if await _provide_roles(net) else None
            short = len(net.host.connected_peers()) < net.target_connections
            # At most one round of lookups per interval, however often connections change.
            if dht.size and short and now - looked_up_at >= DHT_INTERVAL_S:
                looked_up_at = now
                await _learn_providers(net)
            with trio.move_on_after(DHT_INTERVAL_S):
                await net.connections_changed()


async def run_relay(
    net: Network,
    hop: bool,
    reserve: bool,
    *,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Circuit relay v2: every node can dial through relays and accept relayed connections;
    with ``hop`` it relays for others; with ``reserve`` it keeps a slot on the relays among
    its connections, renews them before they end, and announces the circuit addresses (each
    time its connections or reservations change).
    """
    async with open_relay(net.host, hop=hop, reserve=reserve) as relay:
        net.relay = relay
        task_status.started()
        while reserve:
            circuits = await relay.find_relays()
            if circuits != net.circuit_addrs:
                net.circuit_addrs = circuits
                log.info("relay reservations", extra={"circuit_addrs": circuits})
                net.presence_changed()  # announce the new addresses now
            renew_in = await relay.renew()
            with trio.move_on_after(min(DHT_INTERVAL_S, renew_in or DHT_INTERVAL_S)):
                await net.connections_changed()
        await trio.sleep_forever()


async def _provide_roles(net: Network) -> bool:
    ok = net.dht is not None
    for role in net.ctx.settings.node.roles:
        stored = False  # stays False if the lookup times out
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            stored = net.dht is not None and await net.dht.provide(role_key(role, net.p2p.network))
        ok &= stored
    log.info("dht provided roles", extra={"roles": list(net.ctx.settings.node.roles), "ok": ok})
    return ok


async def _learn_providers(net: Network) -> None:
    for role in ROLES:
        if net.dht is None:
            return
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            for addrs in (await net.dht.find_providers(role_key(role, net.p2p.network))).values():
                net.learn(addrs, "dht")


async def locate(net: Network, peer_id: str) -> list[str]:
    """Addresses of ``peer_id``: from the peer book, else looked up in the DHT and learned."""
    known = net.book.peers.get(peer_id)
    if known is not None and known.addrs:
        return list(known.addrs)
    if net.dht is None:
        return []
    with trio.move_on_after(LOOKUP_TIMEOUT_S):
        addrs = await net.dht.find_peer(peer_id)
        net.learn(addrs, "dht")
        return addrs
    return []


def discovery_routes(ctx: NodeContext) -> Routes:
    """``GET /v1/dht/find?peer_id=``, ``GET /v1/dht/providers?role=``, ``GET /v1/dht``."""

    def network() -> Network:
        if ctx.network is None or ctx.network.dht is None:
            raise ApiError(409, 'the DHT is off on this node (p2p.dht = "off")')
        return ctx.network

    async def find(request: Request) -> Any:
        peer_id = _query(request, "peer_id")
        if not peer_id.startswith(("12D3Koo", "Qm")):
            raise ApiError(400, f"?peer_id= is not a peer id: {peer_id!r}")
        return {"peer_id": peer_id, "addrs": await locate(network(), peer_id)}

    async def providers(request: Request) -> Any:
        role = _query(request, "role")
        if role not in ROLES:
            raise ApiError(400, f"?role= must be one of {', '.join(ROLES)}, got {role!r}")
        dht = network().dht
        assert dht is not None
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            found = await dht.find_providers(role_key(role, ctx.settings.p2p.network))
            return {
                "role": role,
                "providers": [{"peer_id": p, "addrs": a} for p, a in found.items()],
            }
        raise ApiError(504, f"no answer from the DHT within {LOOKUP_TIMEOUT_S:.0f} s")

    async def status(_: Request) -> Any:
        dht = network().dht
        assert dht is not None
        return {"mode": dht.mode, "routing_table": dht.size}

    return {
        ("GET", "/v1/dht"): status,
        ("GET", "/v1/dht/find"): find,
        ("GET", "/v1/dht/providers"): providers,
    }


def _query(request: Request, name: str) -> str:
    values = urllib.parse.parse_qs(request.query).get(name)
    if not values or not values[0]:
        raise ApiError(400, f"missing ?{name}=")
    return values[0]
