"""py-libp2p's pubsub rebuilds and re-verifies a signed peer record on every RPC; we remember it.

py-libp2p 0.8.1 attaches the sender's signed peer record (an Envelope) to every pubsub RPC and
the receiver parses it, checks its Ed25519 signature and rewrites its certified address book
each time (``libp2p.pubsub.utils.maybe_consume_signed_record``). A sender reuses the same
envelope bytes until its addresses change, so all but the first of those checks repeat work
already done: profiled on an idle 5-daemon localnet, about an eighth of each daemon's CPU.

:func:`install` wraps the function where pubsub and gossipsub call it: a record already
accepted from the same peer, byte for byte, is accepted again without the work, and consumed
afresh every :data:`REFRESH_S` so the peerstore's 2-hour TTL never runs out. Anything new (a
first record, changed addresses, another peer) goes through the library's full check, and a
rejected record is never remembered, so the behaviour for a bad record is unchanged.

The sending side has the same waste: before every publish or forward, pubsub asks
``env_to_send_in_RPC`` for our own record, which lists and parses the host's listen addresses
and unpacks the cached record to compare them (about 4 % of a 30-node gossip benchmark's
CPU, profiled). :class:`OwnRecord` keeps the answer per host for :data:`OWN_RECORD_S`, so a
change of addresses reaches peers at most that much later; identify tells them at once anyway.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module

NAME = "maybe_consume_signed_record"
OWN_NAME = "env_to_send_in_RPC"
REFRESH_S = 600.0
OWN_RECORD_S = 5.0
MAX_REMEMBERED = 4096
Consume = Callable[[Any, Any, Any], bool]
Build = Callable[[Any], tuple[bytes, bool]]


class RecordCache:
    """Which (peer, record bytes) were accepted, and when; bounded, oldest dropped first."""

    def __init__(self, consume: Consume, clock: Callable[[], float] = time.monotonic) -> None:
        self.consume, self.clock = consume, clock
        self.accepted: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self.hits = 0

    def __call__(self, msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        key, now = (str(peer_id), bytes(msg.senderRecord)), self.clock()
        when = self.accepted.get(key)
        if when is not None and now - when < REFRESH_S:
            self.hits += 1
            return True
        ok = self.consume(msg, host, peer_id)
        if ok:
            self.accepted[key] = now
            self.accepted.move_to_end(key)
            while len(self.accepted) > MAX_REMEMBERED:
                self.accepted.popitem(last=False)
        return ok


class OwnRecord:
    """Our own record's bytes per host, rebuilt by the library at most every OWN_RECORD_S."""

    def __init__(self, build: Build, clock: Callable[[], float] = time.monotonic) -> None:
        self.build, self.clock = build, clock
        # weak: a closed host's entry goes with it, so 20 open/close cycles leave nothing behind
        self.built: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = (
            weakref.WeakKeyDictionary()
        )
        self.hits = 0

    def __call__(self, host: Any) -> tuple[bytes, bool]:
        now, last = self.clock(), self.built.get(host)
        if last is not None and now - last[0] < OWN_RECORD_S:
            self.hits += 1
            return last[1], False
        record, fresh = self.build(host)
        self.built[host] = (now, record)
        return record, fresh


def install() -> RecordCache:
    """Puts one cache on each side of the library's records, once per process.

    Returns the receiving side's cache (tests count its hits).
    """
    current = getattr(pubsub_module, NAME)
    if isinstance(current, RecordCache):
        return current
    cache, own = RecordCache(current), OwnRecord(getattr(pubsub_module, OWN_NAME))
    for module in (pubsub_module, gossipsub_module):  # each imported the functions by name
        setattr(module, NAME, cache)
        setattr(module, OWN_NAME, own)
    return cache
