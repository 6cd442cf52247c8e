"""Request/response channels kept open per peer and protocol, for exchanges where waiting hurts.

A request on a new stream costs the stream's setup: two round trips of multistream-select
before the request is even written, and the peer's bookkeeping for a new inbound stream. On a
loaded machine that setup measured 0.3-0.8 s where the exchange itself took 0.02-0.3 s (the
market's order confirmation, ``bench/market.py``). A :class:`ChannelPool` keeps the stream of
the last exchange open and sends the next request on it: one round trip.

A request is never sent twice. If a pooled channel breaks while carrying a request, the peer
may have acted on it (accepted an order), so the error goes to the caller, as it would for a
fresh stream. Only a channel known to be unusable *before* anything is written (broken
earlier, its connection gone, or idle past :data:`IDLE_S`) is replaced by a new one.

Idle channels are closed by us, before the server's idle timeout
(:data:`p2p.reqresp.DEFAULT_IDLE_TIMEOUT_S`) could close them under a request in flight.
"""

from __future__ import annotations

from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2p.host import DialError, Host
from p2p.reqresp import (
    DEFAULT_IDLE_TIMEOUT_S,
    Channel,
    RequestTimeout,
    StreamFailed,
)

IDLE_S: Final = DEFAULT_IDLE_TIMEOUT_S / 3  # well inside the server's patience


class _Line:
    def __init__(self, stream: INetStream, channel: Channel, now: float) -> None:
        self.stream, self.channel, self.used_at = stream, channel, now
        self.busy = 0  # requests on it or queued for it


class ChannelPool:
    """Channels to peers on request/response protocols served by :func:`p2p.reqresp.serve`."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lines: dict[tuple[str, str, int], _Line] = {}
        self.opened = 0  # streams opened, for tests and benchmarks

    async def request(
        self, peer: str, protocol: str, payload: Any, *, timeout_s: float, max_bytes: int
    ) -> Any:
        """Send ``payload`` on the pooled channel to ``peer`` (opening one if needed).

        ``timeout_s`` covers opening the stream and the exchange; ``max_bytes`` limits request
        and response frames (channels with different limits are different channels).

        Raises:
            The errors of :func:`p2p.reqresp.request`; the request was not resent.
        """
        with trio.move_on_after(timeout_s) as scope:
            key = (peer, protocol, max_bytes)
            line = await self._line(key)
            line.busy += 1
            try:
                return await line.channel.request(payload, timeout_s=timeout_s)
            finally:
                line.busy -= 1
                line.used_at = trio.current_time()
                if line.channel.broken and self._lines.get(key) is line:
                    del self._lines[key]
        assert scope.cancelled_caught
        raise RequestTimeout(f"no response to {protocol} from {peer} within {timeout_s} s")

    async def _line(self, key: tuple[str, str, int]) -> _Line:
        await self._prune()
        line = self._lines.get(key)
        if line is not None and self._usable(line):
            return line
        if line is not None:
            del self._lines[key]
            await line.channel.aclose()
        peer, protocol, max_bytes = key
        try:
            stream = await self.host.new_stream(peer, protocol)
        except DialError as exc:
            raise StreamFailed(str(exc)) from exc
        self.opened += 1
        channel = Channel(stream, timeout_s=IDLE_S, max_bytes=max_bytes)
        other = self._lines.get(key)
        if other is not None and self._usable(other):  # a concurrent caller opened one first
            await channel.aclose()
            return other
        if other is not None:
            await other.channel.aclose()
        line = self._lines[key] = _Line(stream, channel, trio.current_time())
        return line

    @staticmethod
    def _usable(line: _Line) -> bool:
        """Whether a request written now would reach a server still reading this stream."""
        if line.channel.broken or line.stream.muxed_conn.is_closed:
            return False
        # Yamux's own flags (py-libp2p 0.8.1): the server closed or reset its end.
        muxed = getattr(line.stream, "muxed_stream", None)
        return not (getattr(muxed, "recv_closed", False) or getattr(muxed, "reset_received", False))

    async def _prune(self) -> None:
        """Close the channels idle for :data:`IDLE_S` (checked on each request: no task)."""
        stale = trio.current_time() - IDLE_S
        for key, line in list(self._lines.items()):
            if line.used_at < stale and not line.busy:
                del self._lines[key]
                await line.channel.aclose()

    async def aclose(self) -> None:
        """Close every channel (the node is stopping)."""
        lines, self._lines = list(self._lines.values()), {}
        for line in lines:
            await line.channel.aclose()
