"""Yamux window updates as go-yamux sends them: once half the window is read, not per read.

py-libp2p 0.8.1 sends a WINDOW_UPDATE frame on almost every read of a stream (its "partial
slack" and "release on read" paths), and pubsub reads each RPC in two or three reads: a
gossip message cost its receiver three or four extra encrypted frames out and its sender as
many in. Measured: 704 window updates for 200 gossip messages between two hosts. With 21
daemons on one machine that was about an eighth of each idle daemon's CPU (py-spy).

:func:`install` keeps the library's own GrowTo rule (and its window auto-tuning) and drops
the eager paths: an update goes out once the bytes read and not yet re-announced reach
half the target window, as in go-yamux's ``sendWindowUpdate``. A sender is then never
stalled by us while we keep reading: it always holds at least half a window.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

_installed = False


async def _send_window_update_when_half_read(self: Any, *, bytes_read: int = 0) -> None:
    del bytes_read  # the window itself says how much was read since the last update
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        unannounced = self.target_recv_window - (self.recv_window + buffered)
        if unannounced <= 0 or unannounced < self._grow_threshold():
            return
        delta = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    if delta > 0:  # never while holding window_lock: inbound updates need it
        await self.send_window_update(delta, skip_lock=True)


def install() -> None:
    """Replaces YamuxStream's window update policy; idempotent."""
    global _installed  # noqa: PLW0603 - one patch per process
    if not _installed:
        YamuxStream._auto_tune_and_send_window_update = _send_window_update_when_half_read  # type: ignore[method-assign]
        _installed = True
