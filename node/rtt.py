"""Round-trip times to connected peers: a small ping over request/response, every interval.

All a node knew of a peer's latency was how long its dial of that peer took (TCP, Noise, Yamux
and protocol negotiation: several round trips), measured once, and nothing for a peer that
dialled it. Every ``p2p.rtt_interval_s`` each connected peer is pinged on
``/idlegrid/ping/1`` (two requests on one stream, the second timed: one round trip); it
goes into the peer book (``idlegrid peers``, and the auction's latency weight through
``MarketNet.rtt_ms``) and the pool (``idlegrid market``), smoothed so one slow answer does not
swing a bid's rank. A peer that does not speak the protocol (an older node) keeps its dial time.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from consensus.pool import RttMeasured
from p2p import reqresp
from p2p.framing import RequestError
from p2p.host import DialError

if TYPE_CHECKING:
    from node.network import Network

log = logging.getLogger(__name__)

PING_PROTOCOL: Final = "/idlegrid/ping/1"
PING_TIMEOUT_S: Final = 5.0
MAX_PINGED: Final = 64  # peers pinged per round, at most: a node connects to about 8
NEW_WEIGHT: Final = 4  # a sample moves the kept figure by a quarter of the difference


def serve_pings(net: Network) -> None:
    reqresp.serve(net.host, PING_PROTOCOL, _pong, max_bytes=64, timeout_s=PING_TIMEOUT_S)


async def _pong(peer: str, payload: Any) -> Any:
    return payload if isinstance(payload, int) else 0


async def measure_loop(net: Network) -> None:
    """Pings connected peers each interval until cancelled; sets ``net.rtt_measured`` (then
    replaces it) after each round, for whoever waits on fresh figures. Past
    :data:`MAX_PINGED` connections a random sample is pinged each round, so every peer's
    turn comes."""
    while True:
        await trio.sleep(net.p2p.rtt_interval_s)
        peers = net.host.connected_peers()
        async with trio.open_nursery() as nursery:
            for peer in random.sample(peers, min(len(peers), MAX_PINGED)):
                nursery.start_soon(_ping, net, peer)
        net.rtt_measured.set()
        net.rtt_measured = trio.Event()


async def _ping(net: Network, peer_id: str) -> None:
    """Two pings on one stream, the second timed: opening the stream and negotiating its
    protocol cost round trips of their own, which are not the link's latency."""
    if peer_id not in net.host.connected_peers():
        return  # gone since the round began: a ping must not redial it
    try:
        async with reqresp.open_channel(
            net.host, peer_id, PING_PROTOCOL, timeout_s=PING_TIMEOUT_S, max_bytes=64
        ) as channel:
            await channel.request(1)
            started = trio.current_time()
            await channel.request(2)
            sample = max(1, round((trio.current_time() - started) * 1000))
    except (RequestError, DialError) as exc:
        log.debug("ping not answered", extra={"peer": peer_id, "error": str(exc)})
        return
    peer = net.book.peers.get(peer_id)
    if peer is None:
        return  # nothing known of it yet (no hello heard): a figure with no row to show in
    peer.rtt_ms = smoothed(peer.rtt_ms, sample, fresh=not peer.pinged)
    peer.pinged = True
    net.pool.handle(RttMeasured(peer_id, peer.rtt_ms), int(time.time() * 1000))


def smoothed(kept: int | None, sample: int, *, fresh: bool) -> int:
    """The figure to keep after ``sample``: the sample itself when nothing was measured
    before (a dial's time is not a round trip), else a moving average."""
    if kept is None or fresh:
        return sample
    return kept + round((sample - kept) / NEW_WEIGHT)
