"""mDNS on the LAN: announce our addresses and hear our neighbours', on one chosen interface.

Follows the libp2p mDNS spec's records (service ``_p2p._udp.local.``, a random instance name,
one ``dnsaddr=<multiaddr>/p2p/<peer id>`` TXT string per address) but drives zeroconf itself
rather than through py-libp2p's ``MDNSDiscovery``, because that one (see
/work/shared/notes/libp2p.md):

* binds every interface (``Zeroconf()`` with no choice), where a node must pick the LAN it
  trusts: here zeroconf is told the one interface from config;
* only fills the peerstore, so a found peer is never dialled, scored or remembered: here found
  peers come out of a trio channel and go through the node's peer book like bootstrap peers;
* starts a system task nobody stops.

zeroconf calls our listener on its own thread. That thread never touches trio state: it hands
each find to trio with ``TrioToken.run_sync_soon`` (which does not block zeroconf's thread)
and the trio side drops it if nobody is listening any more. Blocking zeroconf calls
(start, register, close) run in a worker thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import psutil
import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

logger = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_p2p._udp.local."
RESOLVE_TIMEOUT_MS: Final = 3000
FOUND_BUFFER: Final = 64  # finds beyond this while the node is busy are dropped (peers re-announce)
TXT_MAX: Final = 255  # one TXT string's length limit
NETWORK_KEY: Final = "idlegrid-network="
CLOSE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Found:
    """A peer heard on the LAN: its id, the addresses it gave (each ends in its id), and the
    idlegrid network it named (None: a libp2p node that is not ours)."""

    peer_id: str
    addrs: list[str]
    network: str | None = None


def interface_ipv4(interface: str) -> str:
    """The IPv4 address to bind for ``interface``: an interface name or one of its addresses.

    Raises:
        ValueError: If no such interface or address exists on this machine.
    """
    ifaces = psutil.net_if_addrs()
    ours = {a.address for addrs in ifaces.values() for a in addrs if a.family == socket.AF_INET}
    try:
        ip = str(ipaddress.IPv4Address(interface))
    except ValueError:
        for a in ifaces.get(interface, []):
            if a.family == socket.AF_INET:
                return str(a.address)
        known = ", ".join(sorted(ifaces)) or "none"
        raise ValueError(f"no IPv4 interface named {interface!r} (have: {known})") from None
    if ip not in ours:
        raise ValueError(f"{ip} is not an address of this machine (have: {', '.join(ours)})")
    return ip


def txt_record(addrs: Sequence[str], network: str) -> bytes:
    """One length-prefixed ``dnsaddr=...`` string per address (too-long ones are left out),
    after an ``idlegrid-network=<name>`` string naming our network."""
    out = b""
    for entry in [f"{NETWORK_KEY}{network}".encode(), *(f"dnsaddr={a}".encode() for a in addrs)]:
        if len(entry) <= TXT_MAX:
            out += bytes([len(entry)]) + entry
    return out


def parse_txt(text: bytes) -> Found | None:
    """The peer in a TXT record, or None when it names no peer or several."""
    addrs, network, i = [], None, 0
    while i < len(text):
        size = text[i]
        entry = text[i + 1 : i + 1 + size]
        i += 1 + size
        if entry.startswith(b"dnsaddr=") and b"/p2p/" in entry:
            addrs.append(entry[len(b"dnsaddr=") :].decode(errors="replace"))
        elif entry.startswith(NETWORK_KEY.encode()):
            network = entry[len(NETWORK_KEY) :].decode(errors="replace")
    peers = {addr.rsplit("/p2p/", 1)[1] for addr in addrs}
    if len(peers) != 1:
        return None
    return Found(peers.pop(), addrs, network)


class _Listener(ServiceListener):
    """Runs on zeroconf's thread; passes each resolved peer to trio and nothing else."""

    def __init__(
        self, own_name: str, token: trio.lowlevel.TrioToken, deliver: Callable[[Found], None]
    ) -> None:
        self.own_name, self.token, self.deliver = own_name, token, deliver

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._resolve(zc, type_, name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._resolve(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        """A peer leaving is noticed by the node's own liveness checks, not here."""

    def _resolve(self, zc: Zeroconf, type_: str, name: str) -> None:
        if name == self.own_name:
            return
        info = zc.get_service_info(type_, name, timeout=RESOLVE_TIMEOUT_MS)
        found = parse_txt(info.text) if info is not None and info.text else None
        if found is None:
            return
        # RunFinishedError: the node is gone, and so is its interest in neighbours.
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self.deliver, found)


@asynccontextmanager
async def open_mdns(
    peer_id: str, addrs: Sequence[str], interface: str, network: str
) -> AsyncIterator[trio.MemoryReceiveChannel[Found]]:
    """Announce ``addrs`` on ``interface`` and yield a channel of peers found there.

    Only peers naming ``network`` come out: a LAN can hold a second idlegrid network (a test
    one beside a real one) or other libp2p software, and dialling those wastes connections.

    Args:
        peer_id: Our peer id (our own announcements are not reported back).
        addrs: Our dialable multiaddrs, each ending in ``/p2p/<peer_id>``.
        interface: An interface name (``eth0``) or one of its IPv4 addresses.
        network: Our network's name (``p2p.network``), announced and required of peers.

    Raises:
        ValueError: If ``interface`` is not on this machine.
        OSError: If zeroconf cannot bind the mDNS port on it.
    """
    ip = interface_ipv4(interface)
    send, receive = trio.open_memory_channel[Found](FOUND_BUFFER)

    def deliver(found: Found) -> None:  # on trio's thread, via run_sync_soon
        if found.peer_id == peer_id:
            return
        if found.network != network:
            extra = {"peer": found.peer_id, "network": found.network}
            logger.debug("mdns peer of another network", extra=extra)
            return
        try:
            send.send_nowait(found)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            logger.debug("mdns find dropped", extra={"peer": found.peer_id})

    label = secrets.token_hex(16)
    name = f"{label}.{SERVICE_TYPE}"
    info = ServiceInfo(SERVICE_TYPE, name, addresses=[socket.inet_aton(ip)], port=0,
                       properties=txt_record(addrs, network), server=f"{label}.local.")  # fmt: skip
    zc = await trio.to_thread.run_sync(_zeroconf_on, ip)
    browser: ServiceBrowser | None = None
    try:
        await trio.to_thread.run_sync(zc.register_service, info)
        listener = _Listener(name, trio.lowlevel.current_trio_token(), deliver)
        browser = ServiceBrowser(zc, SERVICE_TYPE, listener=listener)
        logger.info("mdns on", extra={"interface": interface, "ip": ip, "network": network})
        async with send, receive:
            yield receive
    finally:
        with trio.CancelScope(deadline=trio.current_time() + CLOSE_TIMEOUT_S, shield=True):
            await trio.to_thread.run_sync(_close, zc, browser, info)


def _zeroconf_on(ip: str) -> Zeroconf:
    return Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)


def _close(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo) -> None:
    if browser is not None:
        browser.cancel()
    try:
        zc.unregister_service(info)  # tells neighbours we are gone (best effort)
    except Exception:
        logger.debug("mdns unregister failed", exc_info=True)
    zc.close()
