"""Route probes: a ~1 KB round trip over libp2p to each candidate source of a dataset.

``/idlegrid/probe/1`` is request/response: ``{"d": id, "p": 1 KB}`` -> ``{"has": bool,
"p": 1 KB}``. ``has`` says whether the holder would serve the dataset to us (so a probe also
finds which known peers hold it); the padding makes the round trip cost what a small frame on
that route costs, not just a header's. The time measured includes the stream's negotiation,
as every chunk request on a fresh route pays it too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Final

import trio

from consensus.peer_id import short
from consensus.transfer.links import Probe
from p2p import reqresp
from p2p.framing import RequestError
from p2p.host import Host

log = logging.getLogger(__name__)

PROBE_PROTOCOL: Final = "/idlegrid/probe/1"
PROBE_BYTES: Final = 1024
PROBE_TIMEOUT_S: Final = 5.0
RETRY_BACKOFF_S: Final = (0.0, 0.2, 1.0)


def probe_reply(has: bool) -> dict[str, Any]:
    return {"has": has, "p": os.urandom(PROBE_BYTES)}


def route_of(host: Host, peer: str) -> str:
    """The remote address of our connection to ``peer`` (a ``/p2p-circuit`` one if relayed)."""
    for remote, conns in host.libp2p.get_network().connections.items():
        if remote.to_base58() == peer:
            for conn in conns:
                addrs = conn.get_transport_addresses()
                if addrs:
                    return str(addrs[0])
    return "not connected"


async def probe(host: Host, peer: str, dataset_id: bytes) -> Probe:
    """One probe of ``peer``: round-trip time and whether it serves ``dataset_id`` to us.

    A failed try is retried after a backoff: a connection torn down by an earlier cancelled
    transfer stays listed (and fails new streams) until the library drops it, then we redial.
    """
    for backoff in RETRY_BACKOFF_S:
        await trio.sleep(backoff)
        started = trio.current_time()
        try:
            reply = await reqresp.request(
                host,
                peer,
                PROBE_PROTOCOL,
                {"d": dataset_id, "p": os.urandom(PROBE_BYTES)},
                timeout_s=PROBE_TIMEOUT_S,
                max_bytes=4 * PROBE_BYTES,
            )
        except (RequestError, ConnectionError) as exc:
            log.debug("probe of %s failed: %r", short(peer), exc)
            continue
        rtt = trio.current_time() - started
        has = isinstance(reply, dict) and reply.get("has") is True
        return Probe(peer, route_of(host, peer), rtt, has)
    return Probe(peer, route_of(host, peer), None, False)


async def probe_all(host: Host, peers: Sequence[str], dataset_id: bytes) -> list[Probe]:
    """Probes every peer at once (each bounded by ``PROBE_TIMEOUT_S``)."""
    found: list[Probe] = []

    async def one(peer: str) -> None:
        found.append(await probe(host, peer, dataset_id))

    async with trio.open_nursery() as nursery:
        for peer in dict.fromkeys(peers):
            nursery.start_soon(one, peer)
    return found
