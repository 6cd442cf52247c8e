"""The carriers of the chunk protocol: a libp2p stream, or a bulk TCP connection beside it.

py-libp2p's Noise + Yamux moves about 45-110 MB/s on one core (notes/libp2p.md), a plain TCP
socket over ten times that. So a fetcher may ask the holder, over libp2p (authenticated by
peer id, encrypted by Noise), for a **bulk ticket**: a port, a one-time token, and for data
that is not already ciphertext a fresh 32-byte key. It then connects to that port on the
address its libp2p connection reached, sends the token, and speaks the same chunk protocol:

* :class:`SealedChannel` (the ticket has a key): every frame sealed by AES-256-GCM under that
  key, nonces counting up per direction, so only the peer the holder granted can use the
  channel, and an observer of it learns sizes only. AES-GCM rather than PyNaCl's
  XSalsa20-Poly1305: 0.34 ms against 5.6 ms per MiB here (AES-NI), and the latter capped the
  channel near 180 MB/s.
* :class:`PlainChannel` (no key): frames as they are, for data sealed end to end already (a
  dataset made with ``data add --for``, a task's files). Sealing them again cost both ends
  0.3 ms per MiB, a quarter of the channel's time; their secrecy never depended on it. The
  holder sends a chunk straight from its file (``sendfile``), and the fetcher receives into
  buffers it reuses, so a MiB costs each side one kernel copy and no allocation.

Only the ticket's holder gets in either way (the token), and chunks are hash-checked, so
integrity never depended on the carrier. On a plain channel an attacker on the path can make
a holder look like it served a corrupt chunk (the chunk is still refused), as one can cut any
TCP connection.
"""

from __future__ import annotations

import contextlib
import os
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
POOLED_BUFFERS = 8  # a plain channel's receive buffers kept for reuse (a fetch holds 5 at once)
MIN_BUFFER = 1 << 20


Body = bytes | memoryview  # a frame's body as received (a view: see PlainChannel.release)


class ChunkChannel(Protocol):
    """Frames both ways.

    ``plain``: frames cross the wire as they are, so only ciphertext may be sent on it, and
    files may be handed over whole (:meth:`send_file` without a copy of ours).
    """

    plain: bool

    async def send(self, frame: bytes) -> None: ...

    async def send_file(self, head: bytes, fd: int, offset: int, count: int) -> None:
        """Sends the frame ``head`` + ``count`` bytes of file ``fd`` from ``offset`` (``head``
        begins with the whole frame's header)."""
        ...

    async def receive(self, max_bytes: int) -> Body: ...

    def release(self, body: Body) -> None:
        """``body`` (from :meth:`receive`) is no longer used: its buffer may be reused."""
        ...

    async def aclose(self) -> None: ...


class _Framed:
    """What the channels that take frames whole share: files read into a frame, no reuse."""

    plain = False

    async def send(self, frame: bytes) -> None:
        raise NotImplementedError

    async def send_file(self, head: bytes, fd: int, offset: int, count: int) -> None:
        data = await trio.to_thread.run_sync(os.pread, fd, count, offset)
        if len(data) != count:
            raise OSError(f"file ended {count - len(data)} bytes short")
        await self.send(head + data)

    def release(self, body: Body) -> None:
        pass


class StreamChannel(_Framed):
    """Frames on a libp2p stream."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream

    async def send(self, frame: bytes) -> None:
        try:
            await self.stream.write(frame)
        except StreamError as exc:
            raise StreamFailed(f"write failed: {exc!r}") from exc

    async def receive(self, max_bytes: int) -> Body:
        return await read_frame_body(self.stream, max_bytes)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), contextlib.suppress(StreamError, OSError):
            await self.stream.reset()


class TcpChannel(_Framed):
    """Frames on a bulk TCP connection: what the plain and the sealed channel share.

    Bodies are read with ``recv_into`` straight into a buffer: at several hundred MB/s the
    copies and fresh allocations of joining received pieces took a third of a receiver's main
    thread. So one task sends and one receives at a time, and a send or receive that is
    cancelled midway leaves the channel unusable: close it (every user does, on a timeout or
    an error).
    """

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self._ahead = bytearray()  # read past the last frame (at most READ_AHEAD bytes)

    async def _send_all(self, data: bytes | memoryview) -> None:
        try:
            await self.sock.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamFailed(f"bulk write failed: {exc!r}") from exc

    async def _header(self, max_bytes: int, overhead: int = 0) -> int:
        """The next frame's body length, read off the wire: at most ``max_bytes`` of message
        and ``overhead`` of the carrier's own."""
        header = memoryview(bytearray(HEADER.size))
        await self._fill(header, read_ahead=True)
        (length,) = HEADER.unpack(header)
        if length > max_bytes + overhead:
            raise RequestError(f"bulk frame of {length} bytes, over {max_bytes}")
        return int(length)

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


class SealedChannel(TcpChannel):
    """Frames on a TCP connection, each body sealed with the ticket's key.

    ``frame`` given to :meth:`send` is a plain frame (header + body); the header on the wire
    carries the sealed length. A frame that fails to open breaks the channel (it raises).
    """

    def __init__(self, sock: trio.SocketStream, key: bytes, *, client: bool) -> None:
        super().__init__(sock)
        self.aead = AESGCM(key)
        self._out_dir, self._in_dir = (0, 1) if client else (1, 0)
        self._sent = self._received = 0
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
        await self._send_all(out)

    async def receive(self, max_bytes: int) -> Body:
        length = await self._header(max_bytes, TAG_BYTES)
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


class PlainChannel(TcpChannel):
    """Frames on a TCP connection as they are, for data that is ciphertext already.

    :meth:`receive` returns a view of a buffer the channel reuses once it is handed back with
    :meth:`release` (fresh 1 MiB allocations cost a page fault per 4 KiB: a fifth of a
    receiver's time). :meth:`send_file` hands the kernel the file itself.
    """

    plain = True

    def __init__(self, sock: trio.SocketStream) -> None:
        super().__init__(sock)
        self._free: list[bytearray] = []

    async def send(self, frame: bytes) -> None:
        await self._send_all(frame)

    async def send_file(self, head: bytes, fd: int, offset: int, count: int) -> None:
        await self._send_all(head)
        out, end = self.sock.socket.fileno(), offset + count
        while offset < end:
            try:
                sent = os.sendfile(out, fd, offset, end - offset)
            except BlockingIOError:  # the socket's buffer is full
                await trio.lowlevel.wait_writable(out)
                continue
            except OSError as exc:
                raise StreamFailed(f"bulk write failed: {exc!r}") from exc
            if not sent:  # the file is shorter than promised: the frame cannot be finished
                raise OSError(f"file ended {end - offset} bytes short")
            offset += sent

    async def receive(self, max_bytes: int) -> Body:
        length = await self._header(max_bytes)
        buffer = self._take(length)
        body = memoryview(buffer)[:length]
        await self._fill(body, read_ahead=False)
        return body

    def release(self, body: Body) -> None:
        buffer = body.obj if isinstance(body, memoryview) else None
        if (
            isinstance(buffer, bytearray)
            and len(buffer) >= MIN_BUFFER
            and len(self._free) < POOLED_BUFFERS
        ):
            self._free.append(buffer)

    def _take(self, length: int) -> bytearray:
        if length < MIN_BUFFER // 4:  # a request, a refusal: not worth keeping
            return bytearray(length)
        while self._free:
            buffer = self._free.pop()
            if len(buffer) >= length:
                return buffer
        return bytearray(max(length, MIN_BUFFER))


def ticket_frame(value: dict[str, Any]) -> bytes:
    return encode_frame(value, 4096)
