"""Yamux read wake-ups that outlive their stream: py-libp2p 0.8.1 leaves one per reset stream.

A reader waiting on a stream replaces the stream's wake-up event (``Yamux.stream_events``)
each time it wakes. When what woke it is the stream's end (a reset, or the peer's FIN on a
stream we had closed), the connection has already dropped the stream's bookkeeping, and the
reader puts a fresh event back for a stream that is gone before it sees that and returns.
That event (and the set inside it) then lives as long as the connection, and a node's
connections to the peers it works with last for days: a requester serving channels that
its workers reset gained about one per job.

:func:`install` drops them in the connection's own sweep of closed streams (every 30 s):
an event whose stream is gone has no reader left to wait on it (a read of a stream the
connection no longer knows ends before it waits), and a connection never reuses a stream id.
"""

from __future__ import annotations

from libp2p.stream_muxer.yamux.yamux import Yamux

_sweep_closed_streams = Yamux._sweep_stale_streams


def _sweep_and_drop_orphan_events(self: Yamux, now: float | None = None) -> int:
    reclaimed = _sweep_closed_streams(self, now)
    for stream_id in [s for s in self.stream_events if s not in self.streams]:
        del self.stream_events[stream_id]
    return reclaimed


def install() -> None:
    """Makes Yamux's sweep of closed streams drop their leftover events too; idempotent."""
    Yamux._sweep_stale_streams = _sweep_and_drop_orphan_events  # type: ignore[method-assign]
