"""A worker that computes honestly but serves corrupt bytes, for tests.

Selected by ``worker.executor_wrapper`` (the one hook a test has into a daemon's code): the
executor is left as it is, and every blob this daemon serves (its results and checkpoints)
goes out with one bit flipped in each piece and in each bulk-channel frame, as from a bad disk
or a worker that wants to be paid for a result it never delivers. Keys are served as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.market import blobshare
from node.market.blob_bulk import BULK_PIECE_BYTES
from node.transfer.channel import ChunkChannel
from p2p.framing import HEADER

_honest_read = blobshare._read_piece


def _flipped(data: bytes) -> bytes:
    spoiled = bytearray(data)
    if spoiled:
        spoiled[len(spoiled) // 2] ^= 0x01
    return bytes(spoiled)


def _corrupt_read(path: Path, offset: int, length: int) -> bytes:
    return _flipped(_honest_read(path, offset, length))


async def _corrupt_send(path: Path, offset: int, channel: ChunkChannel) -> None:
    with path.open("rb") as f:
        f.seek(offset)
        while data := f.read(BULK_PIECE_BYTES):
            await channel.send(HEADER.pack(len(data)) + _flipped(data))


def wrap(executor: Any) -> Any:
    blobshare._read_piece = _corrupt_read  # what the blob server reads each piece with
    blobshare.send_blob = _corrupt_send  # type: ignore[attr-defined]  # and streams bulk with
    return executor
