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
* A reservation is renewed only after it has ended, and only on the library's own 5-minute
  sweep: until then the node still announces the circuit while the relay refuses every dial
  to it (status 204), minutes of every hour. :meth:`Relay.renew` renews a third of the
  reservation's life before its end (a relay extends a reservation it still holds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, RelayDiscovery
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.tools.anyio_service import background_trio_service

from p2p.host import DialError, Host

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 5.0
RENEW_AFTER: Final = 2 / 3  # of a reservation's life
MIN_RENEW_WAIT_S: Final = 1.0  # a relay that does not extend a reservation is not asked in a loop
# Peers known not to relay, the first found first to go: one forgotten is asked again (one
# stream) only if connected when relays are next looked for.
NOT_RELAYS_KEPT: Final = 4096
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
        self._not_relays: dict[str, None] = {}  # in the order found (an ordered set)
        # relay -> (unix s we first saw its reservation's expiry, that expiry)
        self._reservations: dict[ID, tuple[float, float]] = {}

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
                self._not_relays[peer_id] = None
                if len(self._not_relays) > NOT_RELAYS_KEPT:
                    del self._not_relays[next(iter(self._not_relays))]
        await self._discovery.discover_relays()
        return self.circuit_addrs()

    async def renew(self) -> float | None:
        """Renews each reservation two thirds into its life (see the module docstring).

        Returns:
            Seconds until the next renewal is due; None when no reservation is held.
        """
        if self._discovery is None:
            return None
        due: list[float] = []
        for relay in self._discovery.get_relays():
            info = self._discovery.get_relay_info(relay)
            if info is None or not info.has_reservation or not info.reservation_expires_at:
                self._reservations.pop(relay, None)
                continue
            renew_at = self._renew_at(relay, float(info.reservation_expires_at))
            if time.time() >= renew_at:
                ok = await self._discovery.make_reservation(relay)
                logger.debug("relay reservation renewed", extra={"relay": str(relay), "ok": ok})
                if not ok:  # refused or unreachable: ask again soon, other relays may serve
                    due.append(PROBE_TIMEOUT_S)
                    continue
                renew_at = self._renew_at(relay, float(info.reservation_expires_at or 0))
            due.append(max(MIN_RENEW_WAIT_S, renew_at - time.time()))
        return min(due, default=None)

    def _renew_at(self, relay: ID, expires: float) -> float:
        """When to renew a reservation ending at ``expires``; its life counts from when we
        first saw that expiry (the relay's clock and ours both in unix seconds)."""
        now = time.time()
        seen, known = self._reservations.get(relay, (now, expires))
        if known != expires:  # renewed: a new life
            seen = now
        self._reservations[relay] = (seen, expires)
        return seen + (expires - seen) * RENEW_AFTER

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
            if info.reservation_expires_at and info.reservation_expires_at < time.time():
                continue  # ended: the relay refuses dials to us (the library still says held)
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
async def open_relay(
    host: Host, *, hop: bool, reserve: bool, limits: RelayLimits | None = None
) -> AsyncIterator[Relay]:
    """Run relay v2 on ``host`` for the duration of the block.

    Every node can dial through relays and accept relayed connections (the STOP side).

    Args:
        host: The host to run on.
        hop: Relay for others (needs a reachable address; costs bandwidth).
        reserve: Reserve a slot on relays among connected peers (see :meth:`Relay.find_relays`)
            so this node is reachable through them: for a node behind NAT.
        limits: A hop's limits on those it relays for (the library's defaults when None:
            reservations live an hour).
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
    protocol = CircuitV2Protocol(host.libp2p, limits, allow_hop=hop)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(background_trio_service(protocol))
        await protocol.event_started.wait()
        discovery = None
        if reserve:
            discovery = RelayDiscovery(host.libp2p, auto_reserve=True)
            await stack.enter_async_context(background_trio_service(discovery))
        yield Relay(host, CircuitV2Transport(host.libp2p, protocol, config), discovery)
