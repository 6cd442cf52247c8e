"""The chunk protocol's messages and the per-chunk compression, shared by server and fetcher.

``/idlegrid/chunks/1``: the fetcher writes request frames ``{"d": dataset id, "i": index}``
without waiting (pipelined); the server answers each, in order, with
``{"i": index, "z": compressed?, "b": bytes}`` or ``{"i": index, "e": code}``.
``/idlegrid/manifest/1`` is request/response (:mod:`p2p.reqresp`):
``{"d": id}`` -> ``{"m": bytes}``.

A chunk travels zstd-compressed when that saves at least 1/8 of it; the receiver decompresses
into at most the size the manifest promises and checks the BLAKE3 hash, so neither the flag
nor the bytes need to be trusted.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack
import zstandard
from blake3 import blake3

from consensus.errors import Invalid
from p2p.framing import HEADER, FrameTooLarge

CHUNKS_PROTOCOL: Final = "/idlegrid/chunks/1"
BULK_PROTOCOL: Final = "/idlegrid/bulk/1"  # a ticket for the bulk channel (node.transfer.channel)
MANIFEST_PROTOCOL: Final = "/idlegrid/manifest/1"
MAX_CHUNK_FRAME: Final = (8 << 20) + 4096
MAX_MANIFEST_FRAME: Final = (64 << 20) + 4096
ZSTD_LEVEL: Final = 1  # fast: the link, not the ratio, is what we save for
SAMPLE_BYTES: Final = 64 << 10
MIN_SAVING: Final = 8  # compress only if it saves >= 1/MIN_SAVING of the chunk
_MAP3: Final = b"\x83"  # msgpack: a map of three pairs
_BIN32: Final = struct.Struct(">BI")  # msgpack: bin 32 (0xc6) and its length
_UINT_WIDTH: Final = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}  # msgpack: uint 8..64, with marker


def pack_chunk(data: bytes) -> tuple[bool, bytes]:
    """(compressed?, bytes to send) for one chunk.

    A 64 KiB sample is tried first, so incompressible chunks (most model weights, archives)
    cost a sixteenth of a full attempt.
    """
    if len(data) > 4 * SAMPLE_BYTES and not sample_compresses(data[:SAMPLE_BYTES]):
        return False, data
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if _saves(packed, len(data)):
        return True, packed
    return False, data


def sample_compresses(sample: bytes) -> bool:
    """Whether a chunk that begins with ``sample`` may be worth compressing."""
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(sample)
    return _saves(packed, len(sample))


def chunk_reply_frame(index: int, compressed: bool, payload: bytes) -> bytes:
    """The frame ``encode_frame({"i": index, "z": compressed, "b": payload})`` carries, with
    the payload copied once.

    The general encoder copied a chunk three times (into msgpack's buffer, out to bytes, behind
    the frame header): a tenth of a holder's time at several hundred MB/s. The payload goes
    last, under a 32-bit bin header; any msgpack decoder reads the same map.

    Raises:
        FrameTooLarge: the payload does not fit :data:`MAX_CHUNK_FRAME`.
    """
    return b"".join((chunk_reply_head(index, compressed, len(payload)), payload))


def chunk_reply_head(index: int, compressed: bool, size: int) -> bytes:
    """What :func:`chunk_reply_frame` puts before a payload of ``size`` bytes.

    Raises:
        FrameTooLarge: the frame would not fit :data:`MAX_CHUNK_FRAME`.
    """
    fields = b"".join(msgpack.packb(x) for x in ("i", index, "z", compressed, "b"))
    length = 1 + len(fields) + _BIN32.size + size
    if length > MAX_CHUNK_FRAME:
        raise FrameTooLarge(length, MAX_CHUNK_FRAME)
    return HEADER.pack(length) + _MAP3 + fields + _BIN32.pack(0xC6, size)


def split_chunk_reply(body: bytes | memoryview) -> dict[str, Any] | None:
    """The reply ``body`` holds, laid out as :func:`chunk_reply_frame` lays it, with the
    payload a view into ``body`` rather than a copy; None for any other layout (decode it).

    Decoding copied each chunk into a fresh object: an allocation and a copy per MiB.
    """
    view = memoryview(body)
    if bytes(view[:3]) != b"\x83\xa1i" or len(view) < 4:
        return None
    width = _UINT_WIDTH.get(view[3], 0) if view[3] >= 0x80 else 1
    at = 3 + width
    if not width or bytes(view[at : at + 3]) not in (b"\xa1z\xc2", b"\xa1z\xc3"):
        return None
    index = int.from_bytes(view[4:at], "big") if width > 1 else view[3]
    compressed = view[at + 2] == 0xC3
    tail = view[at + 3 : at + 3 + 2 + _BIN32.size]
    if len(tail) < 2 + _BIN32.size or bytes(tail[:2]) != b"\xa1b":
        return None
    marker, size = _BIN32.unpack(tail[2:])
    payload = view[at + 3 + len(tail) :]
    if marker != 0xC6 or size != len(payload):
        return None
    return {"i": index, "z": compressed, "b": payload}


def _saves(packed: bytes, size: int) -> bool:
    return len(packed) <= size - size // MIN_SAVING


def unpack_chunk(
    compressed: bool, payload: bytes | memoryview, size: int, digest: bytes
) -> bytes | memoryview:
    """The chunk's bytes, checked against the manifest's ``size`` and ``digest``.

    Raises:
        Invalid: they do not decompress, or do not match (the sender's fault).
    """
    data = payload
    if compressed:
        try:
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise Invalid("chunk", f"does not decompress: {exc}") from None
    if len(data) != size:
        raise Invalid("chunk", f"{len(data)} bytes, the manifest says {size}")
    if blake3(data).digest() != digest:
        raise Invalid("chunk", "bytes do not match the hash")
    return data
