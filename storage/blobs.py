"""Content-addressed blob store: each file is named by the BLAKE3 hex digest of its bytes.

Layout under ``root``::

    ab/abcdef...     a blob, sharded by the first two hex chars to keep directories small
    tmp/             blobs being written; anything here at start-up is a crashed writer's
    quarantine/      blobs that failed their hash check, kept for inspection

The API is synchronous: hashing and fsync block, so trio code calls it through
``trio.to_thread.run_sync`` for anything bigger than a few kilobytes. Methods may run
concurrently from several threads (temp names are unique, renames are atomic), but only one
``BlobStore`` per root should exist per machine at a time, since constructing one deletes
the temp files of any other writer.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from blake3 import blake3

from storage.errors import CorruptBlob

CHUNK_SIZE = 1 << 20
_DIR_MODE = 0o700
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex chars, else raise ``ValueError``.

    Digests arrive from the network; anything else (``../etc``, a path, uppercase that
    would alias another file on a case-insensitive filesystem) must never reach ``Path``.
    """
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise ValueError(f"not a blob digest (64 lowercase hex chars): {digest!r:.100}")
    return digest


class BlobStore:
    """Blobs on disk, written atomically and verified on read.

    A blob is visible under its final name only once it is complete and (unless stored with
    ``sync=False``, until :meth:`sync`) fsynced, so a crash (even power loss) leaves either
    the whole blob or nothing, plus at most a temp file that the next ``BlobStore(root)``
    removes.
    """

    def __init__(self, root: Path) -> None:
        """Create the layout (mode 0700) and remove temp files left by a crashed writer."""
        self.root = root
        self._tmp = root / "tmp"
        self._quarantine = root / "quarantine"
        for directory in (root, self._tmp, self._quarantine):
            directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            if not leftover.is_dir():
                leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._unsynced: set[Path] = set()  # written with sync=False, not yet made durable

    def path(self, digest: str) -> Path:
        """Return where the blob named ``digest`` lives (whether or not it exists)."""
        check_digest(digest)
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        """Return True if a blob of that name is stored (not verified; see :meth:`verify`)."""
        return self.path(digest).is_file()

    def put(self, data: bytes, *, sync: bool = True) -> str:
        """Store ``data`` and return its digest; storing the same bytes again is a no-op.

        With ``sync=False`` the blob is complete and visible (a killed process loses nothing:
        the kernel holds the bytes) but may not survive a power cut until :meth:`sync`. A
        caller storing many blobs in a row (the chunk fetcher) calls :meth:`sync` once before
        it records them as present: one filesystem flush instead of two fsyncs per blob,
        which cost a receiver over half its time.
        """
        return self.put_stream((data,), sync=sync)

    def put_hashed(self, data: bytes | memoryview, digest: str, *, sync: bool = True) -> None:
        """Store ``data`` under ``digest``, which the caller has just computed from it.

        For the chunk fetcher, which hashes every chunk to check it against its manifest:
        hashing it again here cost a receiver about a tenth of its time. A ``digest`` that is
        not the data's is the caller's bug, caught when the blob is read (and quarantined).
        """
        check_digest(digest)
        self._write((data,), None, sync, digest)

    def put_file(self, path: Path) -> str:
        """Copy the file at ``path`` into the store in chunks and return its digest."""
        with path.open("rb") as src:
            return self.put_stream(iter(functools.partial(src.read, CHUNK_SIZE), b""))

    def put_stream(self, chunks: Iterable[bytes], *, sync: bool = True) -> str:
        """Store the concatenation of ``chunks`` and return its digest.

        Hashes while writing, so the blob is never held in memory whole. If ``chunks``
        raises, nothing is stored.
        """
        return self._write(chunks, blake3(), sync, "")

    def _write(
        self,
        chunks: Iterable[bytes | memoryview],
        hasher: blake3 | None,
        sync: bool,
        digest: str,
    ) -> str:
        """Writes ``chunks`` to a temporary file and installs it under what ``hasher`` made of
        them, or (without one) under ``digest``."""
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    if hasher is not None:
                        hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                # Data must be on disk before the rename is: otherwise a power cut can
                # leave a complete-looking name over missing bytes.
                if sync:
                    os.fsync(out.fileno())
            name = digest if hasher is None else hasher.hexdigest()
            self._install(tmp, name, sync)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return name

    def adopt(self, path: Path, digest: str) -> None:
        """Moves the file at ``path`` into the store as ``digest``: a rename, not a copy.

        For a file whose BLAKE3 digest the caller computed as it wrote it (a fetch that
        hashes what arrives): a multi-gigabyte checkpoint is then written once, not twice.
        The digest is trusted here; reads through :meth:`get` and :meth:`open` still verify.
        On another filesystem the file is copied (and hashed again) instead.

        Raises:
            ValueError: ``digest`` is malformed, or the copy does not match it (nothing is
                stored then).
        """
        check_digest(digest)
        _fsync_path(path)  # the bytes are on disk before the name that promises them is
        try:
            self._install(path, digest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            held = _digest_of(path)  # checked first: storing it could meet a good blob
            if held != digest:
                raise ValueError(f"{path} holds {held}, not {digest}") from None
            self.put_file(path)
            path.unlink()

    def get(self, digest: str) -> bytes:
        """Return the blob's bytes, verified against its name.

        Raises:
            ValueError: ``digest`` is malformed.
            FileNotFoundError: no such blob.
            CorruptBlob: the bytes do not match; the file was quarantined, so the blob now
                counts as missing and can be fetched again.
        """
        path = self.path(digest)
        data = path.read_bytes()
        if blake3(data).hexdigest() != digest:
            raise self._quarantine_corrupt(digest, path)
        return data

    def open(self, digest: str) -> BlobReader:
        """Open the blob for streaming reads, verified as it is read (see :class:`BlobReader`).

        Raises:
            ValueError: ``digest`` is malformed.
            FileNotFoundError: no such blob.
        """
        path = self.path(digest)
        return BlobReader(self, digest, path.open("rb"))

    def verify(self, digest: str) -> bool:
        """Return True if the blob is present and intact; quarantine it if it is corrupt."""
        path = self.path(digest)
        try:
            held = _digest_of(path)
        except FileNotFoundError:
            return False
        if held != digest:
            self._quarantine_corrupt(digest, path)
            return False
        return True

    def delete(self, digest: str) -> bool:
        """Remove the blob; return whether it was there.

        No directory fsync: a delete undone by a power cut resurrects a valid blob.
        """
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_digests(self) -> Iterator[str]:
        """Yield the digest of every stored blob (unverified), in no particular order."""
        for shard in self.root.iterdir():
            if _SHARD_RE.fullmatch(shard.name) is None or not shard.is_dir():
                continue
            for entry in shard.iterdir():
                name = entry.name
                if _DIGEST_RE.fullmatch(name) and name.startswith(shard.name):
                    yield name

    def sync(self) -> None:
        """Makes every blob stored with ``sync=False`` so far durable (power-cut safe)."""
        with self._lock:
            pending, self._unsynced = self._unsynced, set()
        if not pending:
            return
        if syncfs(self.root):
            return
        for path in pending:  # no syncfs here: one fsync per blob and per directory
            _fsync_path(path)
        for directory in {p.parent for p in pending} | {self.root}:
            fsync_dir(directory)

    def _install(self, tmp: Path, digest: str, sync: bool = True) -> None:
        final = self.path(digest)
        if final.exists():
            tmp.unlink()
            return
        self._ensure_shard(final.parent, sync)
        os.replace(tmp, final)
        # The rename lives in the shard directory; until that is synced a power cut can
        # forget it even though put() already returned the digest.
        if sync:
            fsync_dir(final.parent)
        else:
            with self._lock:
                self._unsynced.add(final)

    def _ensure_shard(self, shard: Path, sync: bool = True) -> None:
        try:
            shard.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            return
        if sync:
            fsync_dir(self.root)

    def _quarantine_corrupt(self, digest: str, path: Path) -> CorruptBlob:
        target = self._quarantine / f"{digest}.{uuid.uuid4().hex}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            # Another reader found and moved it first. (In the rarer race where a fresh
            # good copy was put in between, we move that one: it is then merely missing.)
            return CorruptBlob(digest, path)
        return CorruptBlob(digest, path, quarantined_to=target)


class BlobReader:
    """A read stream over one blob that checks the hash once the end is reached.

    Bytes are handed out before they can be verified, so a consumer must treat them as
    provisional until the read that returns ``b""`` (or a ``read()`` of everything) has
    returned without raising :class:`~storage.errors.CorruptBlob`. Peers re-verify what
    they receive anyway; this catches our own disk going bad.
    """

    def __init__(self, store: BlobStore, digest: str, file: BinaryIO) -> None:
        self.digest = digest
        self._store = store
        self._file = file
        self._hasher = blake3()
        self._verified = False

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all remaining if negative).

        Raises:
            CorruptBlob: this read reached the end and the whole blob did not match.
        """
        data = self._file.read(size)
        self._hasher.update(data)
        if (size < 0 or not data) and not self._verified:
            self._check()
        return data

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check(self) -> None:
        if self._hasher.hexdigest() != self.digest:
            self.close()
            raise self._store._quarantine_corrupt(self.digest, self._store.path(self.digest))
        self._verified = True


def syncfs(root: Path) -> bool:
    """Flushes the whole filesystem holding ``root`` in one call (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bool(syncfs(fd) == 0)
    finally:
        os.close(fd)


def _digest_of(path: Path) -> str:
    hasher = blake3()
    with path.open("rb") as src:
        for chunk in iter(functools.partial(src.read, CHUNK_SIZE), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
