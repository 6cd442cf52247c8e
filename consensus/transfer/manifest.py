"""A dataset's manifest: its files, modes and the BLAKE3 hashes of the chunks that hold them.

The files' bytes, in layout order (see :mod:`consensus.transfer.plan`), are cut into chunks;
the chunks concatenated form one byte stream, and each file names the range of that stream
it occupies (``start``, ``size``). Small files therefore share chunks (they are packed) and
a big file starts at a chunk boundary, so changing it moves only its own chunks.

The manifest's canonical msgpack encoding is hashed with BLAKE3; that hash is the dataset id.
A manifest arrives from a peer, so :func:`decode_manifest` checks the hash and then every
field (:func:`validate`), refusing with :class:`~consensus.errors.Invalid` naming the field:
no absolute paths, no ``..``, nothing but regular files and directories (so no links and no
device files), no path under a file, sizes within the receiver's limits.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from consensus.codec import Limits, decode, encode
from consensus.errors import Invalid

VERSION = 1
HASH_BYTES = 32
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 64
MODE_BITS = 0o777  # permissions only: setuid, setgid and sticky are refused


@dataclass(frozen=True)
class ManifestLimits:
    """What a receiver accepts; a manifest over any of these is refused before anything moves."""

    max_total_bytes: int = 1 << 40
    max_files: int = 200_000
    max_chunks: int = 1 << 20
    max_chunk_bytes: int = 8 << 20
    max_encoded_bytes: int = 64 << 20


DEFAULT_LIMITS = ManifestLimits()


@dataclass(frozen=True)
class Chunk:
    hash: bytes
    size: int


@dataclass(frozen=True)
class File:
    """A regular file: ``size`` bytes of the chunk stream from ``start``."""

    path: str
    mode: int
    size: int
    start: int


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int


@dataclass(frozen=True)
class Manifest:
    chunks: tuple[Chunk, ...]
    files: tuple[File, ...]
    dirs: tuple[Dir, ...] = ()

    @property
    def total_bytes(self) -> int:
        """Bytes of the chunk stream (files that share bytes count them once)."""
        return sum(c.size for c in self.chunks)

    @property
    def files_bytes(self) -> int:
        """Bytes of its files written out (what a folder of it takes; shared bytes twice)."""
        return sum(f.size for f in self.files)

    def encode(self) -> bytes:
        """The canonical encoding, whose BLAKE3 hash is the dataset id."""
        return encode(
            {
                "v": VERSION,
                "chunks": [[c.hash, c.size] for c in self.chunks],
                "files": [[f.path, f.mode, f.size, f.start] for f in self.files],
                "dirs": [[d.path, d.mode] for d in self.dirs],
            }
        )

    def dataset_id(self) -> bytes:
        return dataset_id_of(self.encode())

    def chunk_offsets(self) -> list[int]:
        """Where each chunk starts in the stream, plus the stream's end as the last item."""
        return [0, *itertools.accumulate(c.size for c in self.chunks)]

    def chunks_of(self, file: File, offsets: list[int]) -> range:
        """Indices of the chunks holding ``file``'s bytes (``offsets`` from chunk_offsets)."""
        if file.size == 0:
            return range(0)
        first = bisect.bisect_right(offsets, file.start) - 1
        last = bisect.bisect_left(offsets, file.start + file.size) - 1
        return range(first, last + 1)


def dataset_id_of(encoded: bytes) -> bytes:
    return blake3(encoded).digest()


def decode_manifest(
    data: bytes, expected_id: bytes | None, limits: ManifestLimits = DEFAULT_LIMITS
) -> Manifest:
    """Parse and validate a manifest received from a peer.

    Raises:
        Invalid: wrong hash, malformed, or refused by :func:`validate` (``what`` names the field).
    """
    if len(data) > limits.max_encoded_bytes:
        raise Invalid("manifest", f"{len(data)} bytes, over {limits.max_encoded_bytes}")
    if expected_id is not None and dataset_id_of(data) != expected_id:
        raise Invalid("manifest", "does not hash to the dataset id")
    codec_limits = Limits(
        max_bytes=limits.max_encoded_bytes,
        max_depth=3,
        max_str_len=MAX_PATH_CHARS * 4,
        max_bin_len=HASH_BYTES,
        max_array_len=max(limits.max_chunks, limits.max_files, 4),
        max_map_len=8,
    )
    raw = decode(data, codec_limits, "manifest")
    manifest = _from_wire(raw, limits)
    validate(manifest, limits)
    return manifest


def _from_wire(raw: Any, limits: ManifestLimits) -> Manifest:
    if not isinstance(raw, dict) or set(raw) != {"v", "chunks", "files", "dirs"}:
        raise Invalid("manifest", "expected a map of exactly v, chunks, files, dirs")
    if raw["v"] != VERSION:
        raise Invalid("manifest.v", f"unsupported version {raw['v']!r:.20}")
    for key, limit in (("chunks", limits.max_chunks), ("files", limits.max_files)):
        if not isinstance(raw[key], list) or len(raw[key]) > limit:
            raise Invalid(f"manifest.{key}", f"expected a list of at most {limit}")
    if not isinstance(raw["dirs"], list) or len(raw["dirs"]) > limits.max_files:
        raise Invalid("manifest.dirs", f"expected a list of at most {limits.max_files}")
    chunks = (_row(r, f"chunks[{i}]", (bytes, int)) for i, r in enumerate(raw["chunks"]))
    files = (_row(r, f"files[{i}]", (str, int, int, int)) for i, r in enumerate(raw["files"]))
    dirs = (_row(r, f"dirs[{i}]", (str, int)) for i, r in enumerate(raw["dirs"]))
    return Manifest(
        chunks=tuple(Chunk(*r) for r in chunks),
        files=tuple(File(*r) for r in files),
        dirs=tuple(Dir(*r) for r in dirs),
    )


def _row(row: Any, what: str, types: tuple[type, ...]) -> list[Any]:
    if not isinstance(row, list) or len(row) != len(types):
        raise Invalid(what, f"expected a list of {len(types)} items")
    for item, kind in zip(row, types, strict=True):
        if type(item) is not kind:
            raise Invalid(what, f"expected {kind.__name__}, got {type(item).__name__}")
    return row


def validate(manifest: Manifest, limits: ManifestLimits = DEFAULT_LIMITS) -> None:
    """Refuse anything that could write outside the target, or more than the limits allow.

    Raises:
        Invalid: naming the first offending field and why.
    """
    for i, chunk in enumerate(manifest.chunks):
        if len(chunk.hash) != HASH_BYTES:
            raise Invalid(f"chunks[{i}].hash", f"expected {HASH_BYTES} bytes")
        if not 0 < chunk.size <= limits.max_chunk_bytes:
            raise Invalid(f"chunks[{i}].size", f"must be in 1..{limits.max_chunk_bytes}")
    total = manifest.total_bytes
    if total > limits.max_total_bytes:
        raise Invalid("manifest", f"{total} bytes in all, over {limits.max_total_bytes}")
    kinds: dict[str, str] = {}
    for i, d in enumerate(manifest.dirs):
        _check_entry(f"dirs[{i}]", d.path, d.mode, kinds, "dir")
    for i, f in enumerate(manifest.files):
        _check_entry(f"files[{i}]", f.path, f.mode, kinds, "file")
        if f.size < 0 or f.start < 0 or f.start + f.size > total:
            raise Invalid(f"files[{i}]", f"bytes {f.start}+{f.size} outside the {total} held")


def _check_entry(what: str, path: str, mode: int, kinds: dict[str, str], kind: str) -> None:
    check_path(path, f"{what}.path")
    if not 0 <= mode <= MODE_BITS:
        raise Invalid(f"{what}.mode", f"{mode:#o} is not a plain permission mode (0..0o777)")
    seen = kinds.get(path)
    if seen == "file" or (seen is not None and kind == "file") or (seen == kind == "dir"):
        raise Invalid(f"{what}.path", f"{path!r:.80} appears twice or is also a directory")
    kinds[path] = kind
    # Every ancestor is a directory, implied when not listed; a file there is refused.
    parts = path.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        if kinds.setdefault(ancestor, "implied") == "file":
            raise Invalid(f"{what}.path", f"{path!r:.80} lies under the file {ancestor!r:.80}")


def check_path(path: str, what: str) -> None:
    """A relative path of plain names, separated by ``/``, that stays inside its root.

    Raises:
        Invalid: absolute, empty, ``.``/``..``, a backslash, a control char, too long or deep.
    """
    if not path or len(path) > MAX_PATH_CHARS:
        raise Invalid(what, f"must be 1..{MAX_PATH_CHARS} chars")
    if path.startswith("/"):
        raise Invalid(what, f"{path!r:.80} is absolute")
    if any(ord(c) < 32 or c in "\\\x7f" for c in path):
        raise Invalid(what, f"{path!r:.80} holds a backslash or control char")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise Invalid(what, f"deeper than {MAX_DEPTH}")
    for part in parts:
        if part in ("", ".", ".."):
            raise Invalid(what, f"{path!r:.80} holds an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise Invalid(what, f"a name longer than {MAX_NAME_BYTES} bytes")
