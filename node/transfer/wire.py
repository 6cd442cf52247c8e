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
from typing import Final

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


def pack_chunk(data: bytes) -> tuple[bool, bytes]:
    """(compressed?, bytes to send) for one chunk.

    A 64 KiB sample is tried first, so incompressible chunks (most model weights, archives)
    cost a sixteenth of a full attempt.
    """
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    if len(data) > 4 * SAMPLE_BYTES and not _saves(
        compressor.compress(data[:SAMPLE_BYTES]), SAMPLE_BYTES
    ):
        return False, data
    packed = compressor.compress(data)
    if _saves(packed, len(data)):
        return True, packed
    return False, data


def chunk_reply_frame(index: int, compressed: bool, payload: bytes) -> bytes:
    """The frame ``encode_frame({"i": index, "z": compressed, "b": payload})`` carries, with
    the payload copied once.

    The general encoder copied a chunk three times (into msgpack's buffer, out to bytes, behind
    the frame header): a tenth of a holder's time at several hundred MB/s. The payload goes
    last, under a 32-bit bin header; any msgpack decoder reads the same map.

    Raises:
        FrameTooLarge: the payload does not fit :data:`MAX_CHUNK_FRAME`.
    """
    fields = b"".join(msgpack.packb(x) for x in ("i", index, "z", compressed, "b"))
    size = 1 + len(fields) + _BIN32.size + len(payload)
    if size > MAX_CHUNK_FRAME:
        raise FrameTooLarge(size, MAX_CHUNK_FRAME)
    head = HEADER.pack(size) + _MAP3 + fields + _BIN32.pack(0xC6, len(payload))
    return b"".join((head, payload))


def _saves(packed: bytes, size: int) -> bool:
    return len(packed) <= size - size // MIN_SAVING


def unpack_chunk(compressed: bool, payload: bytes, size: int, digest: bytes) -> bytes:
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
