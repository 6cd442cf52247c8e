"""Request/response streams kept open per peer and protocol, for exchanges someone waits on.

A request on a new stream costs the stream's setup: two round trips of multistream-select
before the request is even written, and the peer's bookkeeping for a new inbound stream. On a
loaded machine that setup measured 0.3-0.8 s where the exchange itself took 0.02-0.3 s (the
market's order confirmation, ``bench/market.py``). A :class:`ChannelPool` keeps the stream of
an exchange open when it ends, and the next request to the same peer on the same protocol
takes it: one round trip.

A stream carries one request at a time: a request never waits behind another (whose handler
may be slow) and never fails because another broke. Requests at once open streams at once,
as before; up to :data:`MAX_IDLE` of them are kept.

A request is never sent twice. If a kept stream breaks while carrying a request, the peer may
have acted on it (accepted an order), so the error goes to the caller, as it would for a new
stream. Only a stream known to be unusable *before* anything is written (its connection gone,
or the server closed or reset its end: checked on yamux's flags) is replaced by a new one.

Idle streams are closed by :meth:`ChannelPool.run` after :data:`IDLE_S`, before the server's
idle timeout (:data:`p2p.reqresp.DEFAULT_IDLE_TIMEOUT_S`) could close one as a request is
written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.abc import INetStream

from p2p.host import DialError, Host
from p2p.reqresp import (
    DEFAULT_IDLE_TIMEOUT_S,
    TIMEOUT,
    TOO_LARGE,
    Channel,
    RemoteError,
    RequestTimeout,
    StreamFailed,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # see node/daemon.py

IDLE_S: Final = DEFAULT_IDLE_TIMEOUT_S / 3  # well inside the server's patience
MAX_IDLE: Final = 4  # streams kept per peer and protocol
# The server closes the stream after refusing a request with these (p2p.reqresp._Server).
_SERVER_CLOSES: Final = frozenset({TIMEOUT, TOO_LARGE})

Key = tuple[str, str, int]  # peer, protocol, max_bytes


class _Line:
    def __init__(self, stream: INetStream, channel: Channel) -> None:
        self.stream, self.channel = stream, channel
        self.idle_since = trio.current_time()

    def usable(self) -> bool:
        """Whether a request written now would reach a server still reading this stream."""
        if self.channel.broken or self.stream.muxed_conn.is_closed:
            return False
        # Yamux's own flags (py-libp2p 0.8.1); other muxers (QUIC) lack them, and a stream
        # their server closed fails the request written to it.
        muxed = getattr(self.stream, "muxed_stream", None)
        return not (getattr(muxed, "recv_closed", False) or getattr(muxed, "reset_received", False))


class ChannelPool:
    """Kept streams to peers on protocols served by :func:`p2p.reqresp.serve`."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._idle: dict[Key, list[_Line]] = {}
        self.opened = 0  # streams opened, for tests and benchmarks

    async def request(
        self, peer: str, protocol: str, payload: Any, *, timeout_s: float, max_bytes: int
    ) -> Any:
        """Send ``payload`` to ``peer`` on a kept stream, or a new one if none is idle.

        ``timeout_s`` covers opening the stream and the exchange; ``max_bytes`` limits request
        and response frames (streams with different limits are kept apart).

        Raises:
            The errors of :func:`p2p.reqresp.request`; the request was not resent.
        """
        key = (peer, protocol, max_bytes)
        with trio.move_on_after(timeout_s):
            line = await self._take(key) or await self._open(key)
            keep = False
            try:
                reply = await line.channel.request(payload, timeout_s=timeout_s)
            except RemoteError as exc:
                keep = exc.code not in _SERVER_CLOSES
                raise
            else:
                keep = True
                return reply
            finally:
                if keep and not line.channel.broken:
                    await self._put_back(key, line)
                else:
                    await line.channel.aclose()  # a no-op when it broke (it was reset)
        raise RequestTimeout(f"no response to {protocol} from {peer} within {timeout_s} s")

    async def _take(self, key: Key) -> _Line | None:
        lines = self._idle.get(key, [])
        while lines:
            line = lines.pop()
            if line.usable():
                return line
            await line.channel.aclose()
        self._idle.pop(key, None)
        return None

    async def _open(self, key: Key) -> _Line:
        peer, protocol, max_bytes = key
        try:
            stream = await self.host.new_stream(peer, protocol)
        except DialError as exc:
            raise StreamFailed(str(exc)) from exc
        self.opened += 1
        return _Line(stream, Channel(stream, timeout_s=IDLE_S, max_bytes=max_bytes))

    async def _put_back(self, key: Key, line: _Line) -> None:
        lines = self._idle.setdefault(key, [])
        if len(lines) >= MAX_IDLE:
            await line.channel.aclose()
            return
        line.idle_since = trio.current_time()
        lines.append(line)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close streams idle for :data:`IDLE_S`, until cancelled; then close them all."""
        task_status.started()
        try:
            while True:
                await trio.sleep(IDLE_S / 4)
                await self.close_idle(older_than_s=IDLE_S)
        finally:
            with trio.CancelScope(shield=True):
                await self.close_idle(older_than_s=0.0)

    async def close_idle(self, *, older_than_s: float) -> None:
        """Close the streams idle for at least ``older_than_s`` (0: every idle one)."""
        cutoff = trio.current_time() - older_than_s
        stale: list[_Line] = []
        for key, lines in list(self._idle.items()):
            stale += [x for x in lines if x.idle_since <= cutoff]
            lines[:] = [x for x in lines if x.idle_since > cutoff]
            if not lines:
                del self._idle[key]
        for line in stale:
            await line.channel.aclose()

    def idle(self, key: Key) -> int:
        """Streams kept for ``key`` (for tests)."""
        return len(self._idle.get(key, []))
