"""Discovery beyond bootstrap peers and gossip: mDNS on the LAN (``p2p.mdns``).

Each mechanism only finds addresses; :meth:`node.network.Network.learn` takes them into the
peer book, so a peer found here is dialled with backoff, scored, banned and remembered exactly
like a bootstrap peer.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import trio

from p2p.mdns import interface_ipv4, open_mdns

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.network import Network

log = logging.getLogger(__name__)


async def run_discovery(
    net: Network, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Runs every discovery mechanism turned on in config until cancelled."""
    p2p = net.p2p
    async with trio.open_nursery() as nursery:
        if p2p.mdns:
            await nursery.start(run_mdns, net, p2p.mdns_interface)
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
    async with open_mdns(net.host.peer_id, addrs, interface) as found:
        task_status.started()
        async for peer in found:
            net.learn(peer.addrs, "mdns")
