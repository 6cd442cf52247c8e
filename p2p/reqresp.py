"""Request/response over libp2p streams: bids, challenges, vouchers and control use this.

Wire format (see :mod:`p2p.framing`): the client sends one request frame; the server answers
each request frame with one response frame, ``{"ok": payload}`` or
``{"err": {"code": str, "message": str}}``. A stream may carry any number of such exchanges,
one at a time, so the same server serves both:

* :func:`request`: a new stream per request (about 3 ms p50 between two hosts in one
  process on 127.0.0.1, ``bench/reqresp.py``), and
* :func:`open_channel`: one stream kept open for many requests (under 1 ms p50).

Faults are kept apart (style notes): a handler raising :class:`RequestRejected` is the peer's
request refused, and becomes an ``err`` with the handler's code; any other exception is our bug,
logged and answered with ``"internal"``; a peer's oversized or malformed frame is answered with
``"too_large"`` or ``"malformed"``. None of them can take the host down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from consensus.codec import Limits
from p2p.framing import (
    DEFAULT_MAX_BYTES,
    HEADER,
    FrameTooLarge,
    IncompleteFrame,
    ProtocolViolation,
    RemoteError,
    RequestError,
    RequestTimeout,
    StreamFailed,
    decode_body,
    encode_frame,
    frame_limits,
    quoted,
    read_exactly,
    read_frame_body,
    read_frame_length,
    write_frame,
)
from p2p.host import DialError, Host

__all__ = [
    "Channel",
    "FrameTooLarge",
    "ProtocolViolation",
    "RemoteError",
    "RequestError",
    "RequestRejected",
    "RequestTimeout",
    "StreamFailed",
    "open_channel",
    "read_exactly",
    "request",
    "serve",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
# A channel may sit idle between requests this long before the server closes it.
DEFAULT_IDLE_TIMEOUT_S: Final = 60.0
# After refusing a frame the server reads (and drops) what the client still sends, for at
# most this long, so that the client gets to read the refusal: a reset would discard it.
LINGER_S: Final = 2.0
# Cleanup (close or reset) is shielded from cancellation and bounded by this.
CLEANUP_S: Final = 1.0
MAX_CODE_CHARS: Final = 64

# Error codes the server itself sends (handlers choose their own through RequestRejected).
INTERNAL: Final = "internal"
TOO_LARGE: Final = "too_large"
MALFORMED: Final = "malformed"
TIMEOUT: Final = "timeout"

Handler = Callable[[str, Any], Awaitable[Any]]


class RequestRejected(Exception):
    """Raised by a handler to refuse a request; the client gets ``RemoteError(code, ...)``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def request(
    host: Host,
    peer_id: str,
    protocol: str,
    payload: Any,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Any:
    """Send one request on a new stream and return the response payload.

    ``timeout_s`` covers everything: dialing, opening the stream, sending and the reply.

    Raises:
        RemoteError: The peer answered with an error.
        RequestTimeout: No answer in time.
        StreamFailed: No stream could be opened, or it broke.
        FrameTooLarge: The request (nothing is sent) or the response exceeds ``max_bytes``.
        ProtocolViolation: The response is not a valid frame or response.
        TypeError: ``payload`` holds something the codec refuses (our bug).
    """
    frame = encode_frame(payload, max_bytes)
    limits = frame_limits(max_bytes)
    with trio.move_on_after(timeout_s):
        stream = await _open_stream(host, peer_id, protocol)
        try:
            response = await _exchange(stream, frame, limits)
        except RemoteError:
            await _close(stream)  # a complete exchange: end it politely
            raise
        except BaseException:
            await _reset(stream)
            raise
        await _close(stream)
        return response
    raise RequestTimeout(f"no response to {protocol} from {peer_id} within {timeout_s} s")


class Channel:
    """One stream kept open for many request/response exchanges, one at a time.

    Concurrent callers queue (in order) for the stream. An error that leaves the two ends out
    of step (a timeout, a broken or invalid response) breaks the channel: it is reset, and
    later requests raise :class:`StreamFailed`. A :class:`RemoteError` does not break it.
    """

    def __init__(self, stream: INetStream, *, timeout_s: float, max_bytes: int) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._limits = frame_limits(max_bytes)
        self._lock = trio.Lock()
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """Whether the channel can no longer be used."""
        return self._broken is not None

    async def request(self, payload: Any, *, timeout_s: float | None = None) -> Any:
        """Send one request on this channel and return the response payload.

        Raises:
            The same errors as :func:`request`.
        """
        frame = encode_frame(payload, self._max_bytes)
        timeout = self._timeout_s if timeout_s is None else timeout_s
        async with self._lock:
            if self._broken is not None:
                raise StreamFailed(f"channel is broken: {self._broken}")
            with trio.move_on_after(timeout):
                try:
                    return await _exchange(self._stream, frame, self._limits)
                except RemoteError:
                    raise
                except BaseException as error:
                    await self._break(repr(error))
                    raise
            await self._break("timed out")
            raise RequestTimeout(f"no response on channel within {timeout} s")

    async def aclose(self) -> None:
        """Close the stream (idempotent); the server sees the end and closes its side."""
        if self._broken is None:
            self._broken = "closed"
            await _close(self._stream)

    async def _break(self, why: str) -> None:
        self._broken = why
        await _reset(self._stream)


@asynccontextmanager
async def open_channel(
    host: Host,
    peer_id: str,
    protocol: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AsyncIterator[Channel]:
    """A :class:`Channel` to ``peer_id`` for the duration of the block.

    ``timeout_s`` bounds opening the stream and is each request's default timeout.

    Raises:
        RequestTimeout: The stream could not be opened in time.
        StreamFailed: The stream could not be opened.
    """
    stream: INetStream | None = None
    with trio.move_on_after(timeout_s):
        stream = await _open_stream(host, peer_id, protocol)
    if stream is None:
        raise RequestTimeout(f"could not open {protocol} to {peer_id} within {timeout_s} s")
    channel = Channel(stream, timeout_s=timeout_s, max_bytes=max_bytes)
    try:
        yield channel
    finally:
        await channel.aclose()


def serve(
    host: Host,
    protocol: str,
    handler: Handler,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
) -> None:
    """Answer requests for ``protocol`` with ``handler(peer_id, payload)``.

    Each inbound stream is served until the client closes it, stays idle for
    ``idle_timeout_s``, or sends something that leaves the two ends out of step.

    Args:
        host: The host to register on (replaces any handler for ``protocol``).
        protocol: The protocol id, e.g. ``"/idlegrid/bid/1"``.
        handler: Returns the response payload, or raises :class:`RequestRejected`.
        max_bytes: Limit for request and response frames.
        timeout_s: Limit for receiving one request once it has started, and separately for
            the handler; a handler over time is cancelled and answered with ``"timeout"``.
        idle_timeout_s: Limit for waiting for the next request on a stream.
    """
    server = _Server(handler, frame_limits(max_bytes), timeout_s, idle_timeout_s)
    host.set_stream_handler(protocol, server.on_stream)


class _Server:
    def __init__(
        self, handler: Handler, limits: Limits, timeout_s: float, idle_timeout_s: float
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s

    async def on_stream(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id.to_base58()
        try:
            while await self._serve_one(stream, peer_id):
                pass
        except StreamFailed as error:
            logger.debug("request stream from %s broke: %s", peer_id, error)
            await _reset(stream)
        else:
            await _close(stream)  # idempotent after a refusal

    async def _serve_one(self, stream: INetStream, peer_id: str) -> bool:
        """Serve one request; whether the stream can carry another."""
        body = await self._receive(stream, peer_id)
        if body is None:
            return False
        try:
            payload = decode_body(body, self.limits)
        except ProtocolViolation as error:
            logger.info("malformed request from %s: %s", peer_id, error)
            # The whole frame was read, so the stream is still in step for another request.
            return await self._respond(stream, _error(MALFORMED, str(error)))
        return await self._respond(stream, await self._call(peer_id, payload))

    async def _receive(self, stream: INetStream, peer_id: str) -> bytes | None:
        """The next request body, or None when the stream is done (after any answer)."""
        try:
            length = await self._next_length(stream)
            if length is None:
                return None
            with trio.fail_after(self.timeout_s):
                return await read_exactly(stream, length)
        except FrameTooLarge as error:
            await self._refuse(stream, peer_id, TOO_LARGE, str(error))
        except IncompleteFrame as error:
            logger.info("request from %s ended mid-frame: %s", peer_id, error)
        except trio.TooSlowError:
            await self._refuse(stream, peer_id, TIMEOUT, "request not received in time")
        return None

    async def _next_length(self, stream: INetStream) -> int | None:
        """The next frame's length; None once the client closed at a frame boundary or idled."""
        with trio.move_on_after(self.idle_timeout_s):
            try:
                return await read_frame_length(stream, self.limits.max_bytes)
            except IncompleteFrame as error:
                if error.received:
                    raise
        return None

    async def _call(self, peer_id: str, payload: Any) -> dict[str, Any]:
        try:
            with trio.fail_after(self.timeout_s):
                return {"ok": await self.handler(peer_id, payload)}
        except RequestRejected as rejected:
            return _error(rejected.code, rejected.message)
        except trio.TooSlowError:
            logger.warning("request handler for %s took over %.1f s", peer_id, self.timeout_s)
            return _error(TIMEOUT, "handler timed out")
        except Exception:
            logger.exception("request handler failed on a request from %s", peer_id)
            return _error(INTERNAL, "internal error")

    async def _respond(self, stream: INetStream, response: dict[str, Any]) -> bool:
        try:
            frame = encode_frame(response, self.limits.max_bytes)
        except (TypeError, ValueError, OverflowError, FrameTooLarge):
            logger.exception("request handler returned a response we cannot send")
            frame = encode_frame(_error(INTERNAL, "response not encodable"), self.limits.max_bytes)
        with trio.move_on_after(self.timeout_s) as scope:
            await write_frame(stream, frame)
        return not scope.cancelled_caught

    async def _refuse(self, stream: INetStream, peer_id: str, code: str, why: str) -> None:
        logger.info("refusing a request from %s: %s", peer_id, why)
        if await self._respond(stream, _error(code, why)):
            await _close(stream)
            await _linger(stream)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"err": {"code": code, "message": message}}


async def _exchange(stream: INetStream, frame: bytes, limits: Limits) -> Any:
    await write_frame(stream, frame)
    try:
        body = await read_frame_body(stream, limits.max_bytes)
    except IncompleteFrame as error:
        if error.received == 0 and error.expected == HEADER.size:
            # Closed before answering (shutting down, or an idle channel): not malformed.
            raise StreamFailed("the peer closed the stream without answering") from None
        raise
    return _unwrap_response(decode_body(body, limits))


def _unwrap_response(response: Any) -> Any:
    if isinstance(response, dict) and len(response) == 1:
        if "ok" in response:
            return response["ok"]
        error = response.get("err")
        if isinstance(error, dict) and set(error) == {"code", "message"}:
            code, message = error["code"], error["message"]
            if isinstance(code, str) and isinstance(message, str) and code:
                raise RemoteError(quoted(code[:MAX_CODE_CHARS]), quoted(message))
    raise ProtocolViolation("response is neither {'ok': ...} nor {'err': {code, message}}")


async def _open_stream(host: Host, peer_id: str, protocol: str) -> INetStream:
    try:
        return await host.new_stream(peer_id, protocol)
    except DialError as error:
        raise StreamFailed(str(error)) from error


async def _close(stream: INetStream) -> None:
    # The peer may have reset or left first: then there is nothing to close politely.
    with _cleanup_scope(), contextlib.suppress(StreamError, OSError):
        await stream.close()


async def _reset(stream: INetStream) -> None:
    with _cleanup_scope():
        await stream.reset()  # the library's reset swallows its own errors


def _cleanup_scope() -> trio.CancelScope:
    """Cleanup runs even when we are being cancelled, but never for long."""
    return trio.CancelScope(deadline=trio.current_time() + CLEANUP_S, shield=True)


async def _linger(stream: INetStream) -> None:
    """Drop what the client still sends until it closes, then reset (bounded by LINGER_S)."""
    with trio.move_on_after(LINGER_S):
        try:
            while await stream.read(1 << 16):
                pass
        except StreamError:
            pass  # the client closed or reset: done
    await _reset(stream)
