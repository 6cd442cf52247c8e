"""A worker that computes honestly but serves corrupt bytes, for tests.

Selected by ``worker.executor_wrapper`` (the one hook a test has into a daemon's code): the
executor is left as it is, and every piece of a blob this daemon serves (its results and
checkpoints) goes out with one bit flipped, as from a bad disk or a worker that wants to be
paid for a result it never delivers. Keys are served as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.market import blobshare

_honest_read = blobshare._read_piece


def _corrupt_read(path: Path, offset: int, length: int) -> bytes:
    data = bytearray(_honest_read(path, offset, length))
    if data:
        data[len(data) // 2] ^= 0x01
    return bytes(data)


def wrap(executor: Any) -> Any:
    blobshare._read_piece = _corrupt_read  # what the blob server reads each piece with
    return executor
