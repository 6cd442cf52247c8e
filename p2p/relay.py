"""Circuit relay v2: serve as a relay (hop), reserve a slot on one, dial through one.

py-libp2p 0.8.1 has the pieces (``CircuitV2Protocol``, ``CircuitV2Transport``,
``RelayDiscovery``) but wires none of them into a host, and (all seen by running them; see
/work/shared/notes/libp2p.md):

* The swarm drops every ``/p2p-circuit`` address before dialing, so :meth:`Relay.dial` goes
  through the relay transport itself.
* ``discover_relays()`` must be called after connecting (nothing calls it for us), otherwise a
  dial through the relay fails with status 204 (no reservation).
* It decides whether a peer is a relay from the peerstore's protocol list, which our hosts do
  not fill (no identify exchange): an empty list reads as "not a relay" and is cached for
  good. :meth:`Relay.find_relays` asks each connected peer directly (one hop stream) and
  seeds that cache before calling ``discover_relays()``.
* Normal stream ends are logged at error level; :class:`QuietRelayLogs` drops them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, RelayDiscovery
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.tools.anyio_service import background_trio_service

from p2p.host import DialError, Host

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 5.0
CIRCUIT: Final = "/p2p-circuit"
_BENIGN: Final = (
    "Error reading from hop stream",
    "Unexpected error reading from stream",
    "Error writing to destination stream",
    "Failed to fetch stored addresses",
    "Error relaying data",
    "Unexpected error handling hop stream",
    "Error sending status message",
)


class QuietRelayLogs(logging.Filter):
    """Drops the relay's error lines about streams that ended normally."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_BENIGN)


def quiet_relay_logs() -> None:
    for name in ("protocol", "transport", "discovery"):
        log = logging.getLogger(f"libp2p.relay.circuit_v2.{name}")
        if not any(isinstance(f, QuietRelayLogs) for f in log.filters):
            log.addFilter(QuietRelayLogs())


def is_circuit(addr: str) -> bool:
    return f"{CIRCUIT}/" in addr


class Relay:
    """Relay v2 on a host; made by :func:`open_relay`."""

    def __init__(
        self, host: Host, transport: CircuitV2Transport, discovery: RelayDiscovery | None
    ) -> None:
        self._host, self._transport, self._discovery = host, transport, discovery
        self._not_relays: set[str] = set()

    async def dial(self, addr: str) -> str:
        """Connect through a relay: ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>``.

        Returns:
            The target's peer id, once the relayed connection is secured and multiplexed.

        Raises:
            ValueError: ``addr`` is not a circuit address.
            DialError: The relay or the target refused (e.g. status 204: no reservation).
        """
        if not is_circuit(addr) or "/p2p/" not in addr.split(CIRCUIT)[1]:
            raise ValueError(f"not a circuit address (…/p2p-circuit/p2p/<peer id>): {addr!r}")
        try:
            await self._transport.dial(multiaddr.Multiaddr(addr))
        except trio.Cancelled:
            raise
        except Exception as error:
            raise DialError(f"cannot connect through relay {addr}: {error}") from error
        return addr.rsplit("/p2p/", 1)[1]

    async def find_relays(self) -> list[str]:
        """Reserve a slot on every connected peer that serves as a relay, if not done yet.

        Returns:
            Our circuit addresses, one per relay address with a reservation.
        """
        if self._discovery is None:
            return []
        cache = self._discovery._protocol_cache  # seeded: see the module docstring
        for peer_id in self._host.connected_peers():
            peer = ID.from_base58(peer_id)
            if peer_id in self._not_relays or peer in cache:
                continue
            if await self._serves_hop(peer):
                cache[peer] = {HOP_PROTOCOL}
            else:
                self._not_relays.add(peer_id)
        await self._discovery.discover_relays()
        return self.circuit_addrs()

    def circuit_addrs(self) -> list[str]:
        """Where others can reach us through relays that hold a reservation for us."""
        if self._discovery is None:
            return []
        out = []
        store = self._host.libp2p.get_peerstore()
        for relay in self._discovery.get_relays():
            info = self._discovery.get_relay_info(relay)
            if info is None or not info.has_reservation:
                continue
            relay_id = relay.to_base58()
            for addr in store.addrs(relay):
                text = str(addr).removesuffix(f"/p2p/{relay_id}")
                circuit = f"{text}/p2p/{relay_id}{CIRCUIT}/p2p/{self._host.peer_id}"
                if "/p2p" not in text and circuit not in out:
                    out.append(circuit)
        return out

    async def _serves_hop(self, peer: ID) -> bool:
        with trio.move_on_after(PROBE_TIMEOUT_S):
            try:
                stream = await self._host.libp2p.new_stream(peer, [HOP_PROTOCOL])
            except trio.Cancelled:
                raise
            except Exception:
                return False
            await stream.reset()  # only asked whether it speaks hop
            return True
        return False


@asynccontextmanager
async def open_relay(host: Host, *, hop: bool, reserve: bool) -> AsyncIterator[Relay]:
    """Run relay v2 on ``host`` for the duration of the block.

    Every node can dial through relays and accept relayed connections (the STOP side).

    Args:
        host: The host to run on.
        hop: Relay for others (needs a reachable address; costs bandwidth).
        reserve: Reserve a slot on relays among connected peers (see :meth:`Relay.find_relays`)
            so this node is reachable through them: for a node behind NAT.
    """
    quiet_relay_logs()
    # CLIENT makes the transport reserve a slot on every relay it dials through; a node that
    # only dials out has no use for one (and would use up the relay's per-IP slots).
    roles = RelayRole.STOP
    if reserve:
        roles |= RelayRole.CLIENT
    if hop:
        roles |= RelayRole.HOP
    config = RelayConfig(roles=roles)
    protocol = CircuitV2Protocol(host.libp2p, allow_hop=hop)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(background_trio_service(protocol))
        await protocol.event_started.wait()
        discovery = None
        if reserve:
            discovery = RelayDiscovery(host.libp2p, auto_reserve=True)
            await stack.enter_async_context(background_trio_service(discovery))
        yield Relay(host, CircuitV2Transport(host.libp2p, protocol, config), discovery)
