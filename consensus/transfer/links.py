"""How a receiver uses what it measured of each link: which sources, how much in flight.

Chunking is fixed when a dataset is added (the dataset id and the sharing of chunks between
datasets depend on it), so what adapts to the link is the receiver's side: how many requests
it keeps in flight to each source (enough to cover the bandwidth-delay product, plus the
holder's own read-ahead), how long it waits for one chunk (a slow link gets longer), which
sources it uses (the fastest few by probe) and which it leaves (one much slower than the
best). Pure: times and rates are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_WINDOW = 2
MAX_WINDOW = 64
SLACK = 4  # the holder prepares this many replies ahead (node.transfer.server.SERVE_AHEAD)
# A holder's disk or our own store sync can stall a link for tens of milliseconds; requests in
# flight to cover that keep a fast link busy meanwhile (on loopback, where the round trip is
# well under a millisecond, the round trip alone left 5 in flight and the link half idle).
STALL_S = 0.05
MAX_SOURCES = 3  # fetched from at once; more only add contention on the receiver's CPU
SLOW_FACTOR = 4.0  # a source delivering this many times slower than the best is left
MIN_SAMPLES = 4  # chunks from a source before it can be judged slow
BASE_TIMEOUT_S = 30.0
TIMEOUT_CHUNKS = 4.0  # a chunk may take this many times its expected transfer time


@dataclass(frozen=True)
class Probe:
    """One ~1 KB round trip to a candidate source over the route it is connected by."""

    peer: str
    route: str
    rtt_s: float | None  # None: no answer in time
    has: bool  # it holds the dataset and serves it to us


def window(rtt_s: float | None, rate_bps: int, chunk_bytes: int) -> int:
    """Requests to keep in flight to one source: its bandwidth-delay product in chunks (the
    delay being the round trip plus a stall of ``STALL_S``), plus the holder's read-ahead;
    8 while nothing is measured."""
    if rtt_s is None or rate_bps <= 0:
        return 8
    bdp_chunks = math.ceil((rtt_s + STALL_S) * rate_bps / max(chunk_bytes, 1))
    return max(MIN_WINDOW, min(MAX_WINDOW, bdp_chunks + SLACK))


def chunk_timeout(rate_bps: int, chunk_bytes: int) -> float:
    """How long to wait for one chunk: ``BASE_TIMEOUT_S``, or longer where the measured rate
    says a chunk takes longer than that to cross the link."""
    if rate_bps <= 0:
        return BASE_TIMEOUT_S
    return max(BASE_TIMEOUT_S, TIMEOUT_CHUNKS * chunk_bytes / rate_bps)


def rank(probes: list[Probe], limit: int = MAX_SOURCES) -> tuple[list[str], list[str]]:
    """(the sources to use, the standby): the fastest ``limit`` that said they serve the
    dataset to us; then the others that did, then those that did not answer (a lost probe
    does not prove the route dead, so they are a last resort, never dropped)."""
    answered = [p for p in probes if p.has and p.rtt_s is not None]
    answered.sort(key=lambda p: p.rtt_s or 0.0)
    silent = [p for p in probes if p.rtt_s is None]
    peers = [p.peer for p in answered + silent]
    return peers[:limit], peers[limit:]


def is_slow(rate_bps: int, samples: int, best_rate_bps: int) -> bool:
    """A source is left once, over enough chunks, it delivers ``SLOW_FACTOR`` times slower
    than the best source of the same transfer."""
    return samples >= MIN_SAMPLES and rate_bps * SLOW_FACTOR < best_rate_bps
