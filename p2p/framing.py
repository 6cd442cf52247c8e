"""Length-prefixed msgpack frames on a libp2p stream, and the errors a request can end in.

A frame is a 4-byte big-endian length and that many bytes of msgpack, decoded by the
project's strict codec (:mod:`consensus.codec`: no floats, no ext types, bounded sizes), so
everything a peer sends over a stream passes the same checks as a gossiped message.

``stream.read(n)`` in py-libp2p 0.8.1 returns at most what one Yamux frame carried (up to
64 KiB) and raises ``StreamEOF`` at the end of the stream instead of returning ``b""``;
:func:`read_exactly` loops and turns an end mid-frame into :class:`IncompleteFrame`.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Protocol

from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError

from consensus.codec import DEFAULT_LIMITS, Limits, decode, encode
from consensus.errors import Invalid

HEADER: Final = struct.Struct(">I")
DEFAULT_MAX_BYTES: Final = 1 << 20
# A peer-chosen string quoted in our errors and logs is cut to this length.
MAX_QUOTED_CHARS: Final = 200


class Readable(Protocol):
    """What the frame readers need of a stream (``INetStream`` has it)."""

    async def read(self, n: int | None = None) -> bytes: ...


class RequestError(Exception):
    """A request did not produce a response payload."""


class RequestTimeout(RequestError):
    """No response within the time allowed (the peer may still act on the request)."""


class StreamFailed(RequestError):
    """The stream could not be opened, or broke (reset, connection lost): retryable."""


class ProtocolViolation(RequestError):
    """The peer sent bytes that are not a valid frame or response: the peer's fault."""


class IncompleteFrame(ProtocolViolation):
    """The stream ended before a whole frame arrived.

    Attributes:
        received: Bytes of the frame part that did arrive; 0 at a frame boundary, which the
            server treats as the client's clean end of the conversation.
    """

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"stream ended after {received} of {expected} bytes")
        self.expected = expected
        self.received = received


class FrameTooLarge(RequestError):
    """A frame (ours or the peer's) is over the size limit; nothing more is read or sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class RemoteError(RequestError):
    """The peer answered with an error.

    Attributes:
        code: A short machine-readable reason (``"internal"``, ``"too_large"``, or a code
            chosen by the protocol's handler).
        message: Human-readable detail, cut to :data:`MAX_QUOTED_CHARS`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def frame_limits(max_bytes: int) -> Limits:
    """Decoding limits for frames of up to ``max_bytes``.

    One str or bin may fill the frame; depth and element counts keep the codec's defaults,
    which bound how many Python objects one frame can become.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return Limits(
        max_bytes=max_bytes,
        max_depth=DEFAULT_LIMITS.max_depth,
        max_str_len=max_bytes,
        max_bin_len=max_bytes,
        max_array_len=DEFAULT_LIMITS.max_array_len,
        max_map_len=DEFAULT_LIMITS.max_map_len,
    )


def encode_frame(value: Any, max_bytes: int) -> bytes:
    """The frame carrying ``value``.

    Raises:
        FrameTooLarge: If the encoded value exceeds ``max_bytes`` (checked before sending).
        TypeError: If ``value`` holds something the codec refuses (a float, a set): our bug.
    """
    body = encode(value)
    if len(body) > max_bytes:
        raise FrameTooLarge(len(body), max_bytes)
    return HEADER.pack(len(body)) + body


async def read_exactly(stream: Readable, n: int) -> bytes:
    """Read exactly ``n`` bytes, however many ``read`` calls they take.

    Raises:
        IncompleteFrame: The stream ended first (``received`` says how much came).
        StreamFailed: The stream was reset or broke.
    """
    data = bytearray()
    while len(data) < n:
        try:
            chunk = await stream.read(n - len(data))
        except StreamEOF:
            raise IncompleteFrame(n, len(data)) from None
        except StreamError as error:
            raise StreamFailed(f"stream broke while reading: {error!r}") from error
        if not chunk:  # some muxer paths signal the end with b"" instead of StreamEOF
            raise IncompleteFrame(n, len(data))
        data += chunk
    return bytes(data)


async def read_frame_length(stream: Readable, max_bytes: int) -> int:
    """The length declared by the next frame's header.

    Raises:
        FrameTooLarge: The header declares more than ``max_bytes`` (the body is left unread).
        IncompleteFrame: The stream ended in the header (``received == 0``: before it).
        StreamFailed: The stream was reset or broke.
    """
    (length,) = HEADER.unpack(await read_exactly(stream, HEADER.size))
    if length > max_bytes:
        raise FrameTooLarge(length, max_bytes)
    return int(length)


async def read_frame_body(stream: Readable, max_bytes: int) -> bytes:
    """The body of the next frame, refusing a declared length over ``max_bytes`` unread.

    Raises:
        The errors of :func:`read_frame_length`, and :class:`IncompleteFrame` for a cut body.
    """
    return await read_exactly(stream, await read_frame_length(stream, max_bytes))


def decode_body(body: bytes, limits: Limits) -> Any:
    """Decode a frame body from a peer.

    Raises:
        ProtocolViolation: Not one valid msgpack value within ``limits``.
    """
    try:
        return decode(body, limits, what="frame")
    except Invalid as error:
        raise ProtocolViolation(str(error)) from None


async def write_frame(stream: INetStream, frame: bytes) -> None:
    """Write an encoded frame.

    Raises:
        StreamFailed: The stream is closed, reset or broken.
    """
    try:
        await stream.write(frame)
    except StreamError as error:
        raise StreamFailed(f"stream broke while writing: {error!r}") from error


def quoted(text: str) -> str:
    """``text`` cut to :data:`MAX_QUOTED_CHARS`, for peer-chosen strings in errors and logs."""
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return text[: MAX_QUOTED_CHARS - 3] + "..."
