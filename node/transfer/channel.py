"""The two carriers of the chunk protocol: a libp2p stream, or a bulk TCP connection beside it.

py-libp2p's Noise + Yamux moves about 45-110 MB/s on one core (notes/libp2p.md), a plain TCP
socket over ten times that. So a fetcher may ask the holder, over libp2p (authenticated by
peer id, encrypted by Noise), for a **bulk ticket**: a port, a one-time token and a fresh
32-byte key. It then connects to that port on the address its libp2p connection reached, sends
the token, and speaks the same chunk protocol with every frame sealed by AES-256-GCM under that
key, nonces counting up per direction. So only the peer the holder granted can use the channel,
and an observer of it learns sizes only. (Chunks are also hash-checked, so integrity never
depended on the carrier.) AES-GCM rather than PyNaCl's XSalsa20-Poly1305: 0.34 ms against
5.6 ms per MiB here (AES-NI), and the latter capped the channel near 180 MB/s.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any, Protocol

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from p2p.framing import HEADER, RequestError, StreamFailed, encode_frame, read_frame_body

TOKEN_BYTES = 32
KEY_BYTES = 32
TAG_BYTES = 16
_NONCE = struct.Struct(">I Q")  # direction, counter: 12 bytes, never reused under one key
READ_AHEAD = 64 << 10


class ChunkChannel(Protocol):
    async def send(self, frame: bytes) -> None: ...
    async def receive(self, max_bytes: int) -> bytes: ...
    async def aclose(self) -> None: ...


class StreamChannel:
    """Frames on a libp2p stream."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream

    async def send(self, frame: bytes) -> None:
        try:
            await self.stream.write(frame)
        except StreamError as exc:
            raise StreamFailed(f"write failed: {exc!r}") from exc

    async def receive(self, max_bytes: int) -> bytes:
        return await read_frame_body(self.stream, max_bytes)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), contextlib.suppress(StreamError, OSError):
            await self.stream.reset()


class SealedChannel:
    """Frames on a TCP connection, each body sealed with the ticket's key.

    ``frame`` given to :meth:`send` is a plain frame (header + body); the header on the wire
    carries the sealed length. A frame that fails to open breaks the channel (it raises).

    Bodies are read with ``recv_into`` straight into one buffer per channel and sealed into
    another: at several hundred MB/s the copies and fresh allocations of joining received
    pieces took a third of a receiver's main thread. So one task sends and one receives at a
    time, and a send or receive that is cancelled midway leaves the channel unusable: close
    it (every user does, on a timeout or an error).
    """

    def __init__(self, sock: trio.SocketStream, key: bytes, *, client: bool) -> None:
        self.sock, self.aead = sock, AESGCM(key)
        self._out_dir, self._in_dir = (0, 1) if client else (1, 0)
        self._sent = self._received = 0
        self._ahead = bytearray()  # read past the last frame (at most READ_AHEAD bytes)
        self._inbox = bytearray()  # the sealed body being read, reused
        self._outbox = bytearray()  # the sealed frame being sent, reused

    async def send(self, frame: bytes) -> None:
        nonce = _NONCE.pack(self._out_dir, self._sent)
        self._sent += 1
        size = len(frame) + TAG_BYTES  # header + sealed body
        if len(self._outbox) < size:
            self._outbox = bytearray(size)
        out = memoryview(self._outbox)[:size]
        HEADER.pack_into(out, 0, size - HEADER.size)
        self.aead.encrypt_into(nonce, memoryview(frame)[HEADER.size :], None, out[HEADER.size :])
        try:
            await self.sock.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamFailed(f"bulk write failed: {exc!r}") from exc

    async def receive(self, max_bytes: int) -> bytes:
        header = memoryview(bytearray(HEADER.size))
        await self._fill(header, read_ahead=True)
        (length,) = HEADER.unpack(header)
        if length > max_bytes + TAG_BYTES:
            raise RequestError(f"bulk frame of {length} bytes, over {max_bytes}")
        if length < TAG_BYTES:
            raise RequestError(f"bulk frame of {length} bytes, shorter than its tag")
        if len(self._inbox) < length:
            self._inbox = bytearray(length)
        sealed = memoryview(self._inbox)[:length]
        await self._fill(sealed, read_ahead=False)
        nonce = _NONCE.pack(self._in_dir, self._received)
        self._received += 1
        try:
            return self.aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise RequestError("bulk frame does not open with the ticket's key") from None

    async def _fill(self, view: memoryview, *, read_ahead: bool) -> None:
        """Fills ``view`` from what was read ahead, then from the socket.

        With ``read_ahead`` (a header: a few bytes) one receive takes up to
        :data:`READ_AHEAD` bytes, so a header rarely costs a system call of its own; a body is
        received straight into ``view``, never past it.
        """
        got = min(len(self._ahead), len(view))
        view[:got] = self._ahead[:got]
        del self._ahead[:got]
        while got < len(view):
            if read_ahead:
                data = await self._receive(READ_AHEAD)
                take = min(len(data), len(view) - got)
                view[got : got + take] = data[:take]
                self._ahead += data[take:]
                got += take
            else:
                got += await self._receive_into(view[got:])

    async def _receive(self, max_bytes: int) -> bytes:
        try:
            data = await self.sock.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise StreamFailed(f"bulk read failed: {exc!r}") from exc
        if not data:
            raise StreamFailed("bulk connection closed")
        return data

    async def _receive_into(self, view: memoryview) -> int:
        try:
            got = await self.sock.socket.recv_into(view)
        except OSError as exc:
            raise StreamFailed(f"bulk read failed: {exc!r}") from exc
        if not got:
            raise StreamFailed("bulk connection closed")
        return got

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.sock.aclose()


def ticket_frame(value: dict[str, Any]) -> bytes:
    return encode_frame(value, 4096)
