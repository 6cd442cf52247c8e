"""Kademlia DHT (py-libp2p's ``KadDHT``): find a peer's addresses by id, and providers by name.

What the library leaves to us (see /work/shared/notes/libp2p.md):

* Its routing table learns a peer only from that peer's inbound DHT streams or an explicit
  ``add_peer``; connections alone add nothing. :meth:`Dht.add_connected` feeds it every
  connected peer (the node calls it whenever its connections change).
* ``find_providers`` returns the same provider several times; we merge by peer id. It also
  answers only from the records a node holds once it holds any, so we ask the network too.
* Keys: ``provide`` takes a CID or a hex multihash; a plain name is hashed here into a
  SHA-256 multihash, so names of any length and alphabet are safe.
* A remote closing its DHT stream (``StreamEOF``, an exception in this library) is logged at
  warning level as "Failed to read DHT message"; :class:`QuietDhtLogs` drops those records.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio
from libp2p.kad_dht.common import PROTOCOL_ID, QUERY_TIMEOUT
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT, _encode_key
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from p2p.host import Host

logger = logging.getLogger(__name__)

MODES: Final = {"server": DHTMode.SERVER, "client": DHTMode.CLIENT}
SHA256_MULTIHASH: Final = b"\x12\x20"
# Benign warnings of the library's DHT handler: a peer ending its stream, or resetting it.
_BENIGN: Final = ("Failed to read DHT message", "Incomplete DHT message", "Error handling DHT")


class QuietDhtLogs(logging.Filter):
    """Drops the DHT's warnings about streams that peers close normally."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or not record.getMessage().startswith(_BENIGN)


def quiet_dht_logs() -> None:
    """Installs :class:`QuietDhtLogs` once on the library's DHT loggers."""
    for name in ("libp2p.kad_dht.kad_dht", "libp2p.kad_dht.peer_routing"):
        log = logging.getLogger(name)
        if not any(isinstance(f, QuietDhtLogs) for f in log.filters):
            log.addFilter(QuietDhtLogs())


def key_of(name: str) -> str:
    """The DHT key (a hex SHA-256 multihash) under which ``name`` is provided."""
    return (SHA256_MULTIHASH + hashlib.sha256(name.encode()).digest()).hex()


class Dht:
    """A running DHT node on a :class:`~p2p.host.Host`; made by :func:`open_dht`."""

    def __init__(self, host: Host, kad: KadDHT, mode: str) -> None:
        self._host, self._kad, self.mode = host, kad, mode

    @property
    def size(self) -> int:
        """Peers in the routing table."""
        return self._kad.get_routing_table_size()

    async def add_connected(self) -> int:
        """Adds every connected peer that serves the DHT to the routing table; returns how many."""
        added = 0
        for peer_id in self._host.connected_peers():
            try:
                added += bool(await self._kad.add_peer(ID.from_base58(peer_id)))
            except Exception:  # a peer that went away meanwhile, or speaks no DHT
                logger.debug("dht add_peer failed", extra={"peer": peer_id}, exc_info=True)
        return added

    async def find_peer(self, peer_id: str) -> list[str]:
        """Addresses of ``peer_id`` (each ending in ``/p2p/<peer_id>``); [] if not found."""
        info = await self._kad.find_peer(ID.from_base58(peer_id))
        return [] if info is None else _with_id(peer_id, info.addrs)

    async def provide(self, name: str) -> bool:
        """Announces this node as a provider of ``name``; False if no peer took the record."""
        return bool(await self._kad.provide(key_of(name)))

    async def find_providers(self, name: str, count: int = 20) -> dict[str, list[str]]:
        """Providers of ``name`` (ourselves excluded): peer id -> its addresses.

        The library answers from the records it holds whenever it holds any, and it keeps
        every provider a lookup found: after one answer a node would never learn another
        provider. So the peers closest to the key are asked every time, and what they say is
        merged with what we hold.
        """
        key = _encode_key(key_of(name))
        store = self._kad.provider_store
        found = list(store.get_providers(key))

        async def ask(peer: ID) -> None:
            with trio.move_on_after(QUERY_TIMEOUT):
                try:
                    providers, _ = await store._get_providers_from_peer_with_closers(peer, key)
                except Exception:  # a peer that went away meanwhile, or speaks no DHT
                    logger.debug("dht get_providers failed", extra={"peer": str(peer)})
                    return
                for info in providers:
                    store.add_provider(key, info)
                found.extend(providers)

        closest = await self._kad.peer_routing.find_closest_peers_network(key)
        async with trio.open_nursery() as nursery:
            for peer in closest:
                if peer != self._kad.local_peer_id:
                    nursery.start_soon(ask, peer)
        return self._by_peer(found, count)

    def _by_peer(self, found: list[PeerInfo], count: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for info in found:
            peer_id = info.peer_id.to_base58()
            if peer_id == self._host.peer_id or (len(out) >= count and peer_id not in out):
                continue
            addrs = out.setdefault(peer_id, [])
            addrs.extend(a for a in _with_id(peer_id, info.addrs) if a not in addrs)
        return out


def _with_id(peer_id: str, addrs: object) -> list[str]:
    suffix = f"/p2p/{peer_id}"
    out = []
    for addr in addrs:  # type: ignore[attr-defined]
        text = str(addr)
        out.append(text if text.endswith(suffix) else text + suffix)
    return out


@asynccontextmanager
async def open_dht(host: Host, mode: str = "server") -> AsyncIterator[Dht]:
    """Run a DHT node for the duration of the block.

    Args:
        host: The host it serves on (``server`` mode) and queries through.
        mode: ``server`` (answers others' queries: a reachable node) or ``client`` (only
            asks: a node behind NAT).

    Raises:
        ValueError: An unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"DHT mode must be one of {', '.join(MODES)}, got {mode!r}")
    quiet_dht_logs()
    kad = KadDHT(host.libp2p, MODES[mode], enable_random_walk=False)
    if mode == "server":
        # Re-registered through our host, so that a bug in its handler costs one stream
        # rather than cancelling the swarm.
        host.set_stream_handler(str(PROTOCOL_ID), kad.handle_stream)
    try:
        async with background_trio_service(kad):
            yield Dht(host, kad, mode)
    finally:
        if mode == "server":
            host.remove_stream_handler(str(PROTOCOL_ID))
