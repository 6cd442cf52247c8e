"""How a dataset's files are laid out in chunks, before anything is read.

Files at least ``pack_below`` bytes long ("big") come first, in path order, each starting at a
chunk boundary and cut into ``chunk_bytes`` pieces: changing one moves only its own chunks.
Smaller files follow, packed whole into shared chunks, so ten thousand small files are not
ten thousand requests. A pack closes when the next file would overflow it, or, once it is a
quarter full, after a file whose path hash is a marker: so a small file that grows shifts only
the packs up to the next marker, not every pack after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from blake3 import blake3

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_PACK_BELOW = 256 << 10
MARKER_ONE_IN = 16


@dataclass(frozen=True)
class Piece:
    """``length`` bytes of file ``file`` (an index into the input) from ``offset``."""

    file: int
    offset: int
    length: int


@dataclass
class Layout:
    """The chunks as lists of pieces, and where each file starts in the chunk stream."""

    chunks: list[list[Piece]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)


def plan_layout(
    files: Sequence[tuple[str, int]],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    pack_below: int = DEFAULT_PACK_BELOW,
) -> Layout:
    """Lay out ``files`` (path, size) in chunks; the result does not depend on input order.

    Raises:
        ValueError: a negative size, ``chunk_bytes`` < 1 or ``pack_below`` > ``chunk_bytes``.
    """
    if chunk_bytes < 1 or not 0 <= pack_below <= chunk_bytes:
        raise ValueError("need 1 <= chunk_bytes and 0 <= pack_below <= chunk_bytes")
    if any(size < 0 for _, size in files):
        raise ValueError("a file size is negative")
    order = sorted(range(len(files)), key=lambda i: files[i][0])
    layout = Layout(starts=[0] * len(files))
    stream = 0
    for i in order:
        size = files[i][1]
        if size < pack_below or size == 0:
            continue
        layout.starts[i] = stream
        for offset in range(0, size, chunk_bytes):
            layout.chunks.append([Piece(i, offset, min(chunk_bytes, size - offset))])
        stream += size
    pack: list[Piece] = []
    filled = 0
    for i in order:
        path, size = files[i]
        if size >= pack_below or size == 0:
            continue
        if filled + size > chunk_bytes:
            layout.chunks.append(pack)
            pack, filled = [], 0
        layout.starts[i] = stream
        pack.append(Piece(i, 0, size))
        filled += size
        stream += size
        if filled * 4 >= chunk_bytes and _is_marker(path):
            layout.chunks.append(pack)
            pack, filled = [], 0
    if pack:
        layout.chunks.append(pack)
    return layout


def _is_marker(path: str) -> bool:
    return blake3(path.encode("utf-8", "surrogateescape")).digest()[0] % MARKER_ONE_IN == 0
