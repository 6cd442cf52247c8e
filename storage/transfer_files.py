"""Datasets on disk: chunk a file or folder into the blob store, and write one back out safely.

:func:`build` reads a path, lays it out (:mod:`consensus.transfer.plan`), stores each chunk in a
:class:`~storage.blobs.BlobStore` under its BLAKE3 hash and the manifest under its own hash (the
dataset id), so a chunk held once is never stored or fetched twice.

:func:`materialize` writes a *validated* manifest under a target directory. It walks every
path one name at a time from an open directory fd with ``O_NOFOLLOW``, so even a symlink
planted in the target beforehand cannot lead a write outside it; files are written to a
temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from consensus.transfer.manifest import MODE_BITS, Chunk, Dir, File, Manifest
from consensus.transfer.plan import DEFAULT_CHUNK_BYTES, DEFAULT_PACK_BELOW, plan_layout
from storage.blobs import BlobStore

_PART_SUFFIX = ".idlegrid-part"


class UnsupportedEntry(ValueError):
    """A path that cannot be in a dataset (a link, a device, a socket), or changed while read."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class UnsafeTarget(OSError):
    """The target directory holds something in the way (a link, a file where a dir must be)."""


@dataclass(frozen=True)
class Built:
    manifest: Manifest
    dataset_id: bytes


def scan(path: Path) -> tuple[list[tuple[str, int, int, Path]], list[tuple[str, int]]]:
    """Files (relative path, mode, size, absolute path) and directories (path, mode) under ``path``.

    A single file is a dataset of one file named after it.

    Raises:
        UnsupportedEntry: a symlink, device, socket or fifo anywhere (nothing is followed).
        FileNotFoundError: ``path`` does not exist.
    """
    top = os.lstat(path)
    if stat.S_ISREG(top.st_mode):
        return [(path.name, stat.S_IMODE(top.st_mode) & MODE_BITS, top.st_size, path)], []
    if not stat.S_ISDIR(top.st_mode):
        raise UnsupportedEntry(path, "neither a regular file nor a directory")
    files: list[tuple[str, int, int, Path]] = []
    dirs: list[tuple[str, int]] = []
    for entry in _walk(path):
        st = entry.stat(follow_symlinks=False)
        rel = Path(entry.path).relative_to(path).as_posix()
        mode = stat.S_IMODE(st.st_mode) & MODE_BITS
        if stat.S_ISREG(st.st_mode):
            files.append((rel, mode, st.st_size, Path(entry.path)))
        elif stat.S_ISDIR(st.st_mode):
            dirs.append((rel, mode))
        else:
            raise UnsupportedEntry(entry.path, "links, devices, sockets and fifos are not allowed")
    return files, dirs


def _walk(root: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            yield entry
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))


def build(
    path: Path,
    store: BlobStore,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    pack_below: int = DEFAULT_PACK_BELOW,
) -> Built:
    """Chunk ``path`` into ``store`` and return its manifest and dataset id.

    Raises:
        UnsupportedEntry: see :func:`scan`; or a file changed size while it was read.
    """
    files, dirs = scan(path)
    layout = plan_layout([(rel, size) for rel, _, size, _ in files], chunk_bytes, pack_below)
    chunks = []
    for pieces in layout.chunks:
        data = b"".join(_read(files[p.file][3], p.offset, p.length) for p in pieces)
        chunks.append(Chunk(bytes.fromhex(store.put(data)), len(data)))
    entries = [
        File(rel, mode, size, layout.starts[i]) for i, (rel, mode, size, _) in enumerate(files)
    ]
    manifest = Manifest(
        chunks=tuple(chunks),
        files=tuple(sorted(entries, key=lambda f: f.path)),
        dirs=tuple(Dir(rel, mode) for rel, mode in dirs),
    )
    digest = store.put(manifest.encode())
    return Built(manifest, bytes.fromhex(digest))


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise UnsupportedEntry(path, "changed size while it was read")
    return data


def materialize(manifest: Manifest, store: BlobStore, out: Path) -> None:
    """Write the dataset under ``out`` (created if missing), replacing files of the same name.

    ``manifest`` must have passed :func:`~consensus.transfer.manifest.validate` and every chunk
    must be in ``store`` (each is verified against its hash as it is read).

    Raises:
        UnsafeTarget: a symlink or a non-directory where the path needs a directory.
        storage.errors.CorruptBlob: a stored chunk went bad (it is quarantined).
    """
    out.mkdir(parents=True, exist_ok=True)
    root = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dir_modes = {d.path: d.mode for d in manifest.dirs}
        for path in sorted(dir_modes):
            os.close(_open_dir(root, path.split("/")))
        offsets = manifest.chunk_offsets()
        cache: dict[int, bytes] = {}
        for file in manifest.files:
            parts = file.path.split("/")
            parent = _open_dir(root, parts[:-1])
            try:
                _write_file(parent, parts[-1], file, manifest, store, offsets=offsets, cache=cache)
            finally:
                os.close(parent)
        for path in sorted(dir_modes, reverse=True):  # last, so 0o500 does not block writes
            fd = _open_dir(root, path.split("/"))
            try:
                os.fchmod(fd, dir_modes[path])
            finally:
                os.close(fd)
    finally:
        os.close(root)


def _open_dir(root: int, parts: list[str]) -> int:
    """An fd of the directory ``parts`` under ``root``, created as needed, never via a link."""
    fd = os.dup(root)
    try:
        for name in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                raise UnsafeTarget(f"{'/'.join(parts)}: {name!r} is not a plain directory") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(
    parent: int,
    name: str,
    file: File,
    manifest: Manifest,
    store: BlobStore,
    *,
    offsets: list[int],
    cache: dict[int, bytes],
) -> None:
    part = f".{name}{_PART_SUFFIX}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part, dir_fd=parent)  # a crashed earlier attempt's
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(part, flags, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            for index in manifest.chunks_of(file, offsets):
                data = cache.get(index)
                if data is None:
                    data = store.get(manifest.chunks[index].hash.hex())
                    cache.clear()  # packs are read in order: one chunk of cache is enough
                    cache[index] = data
                lo = max(file.start - offsets[index], 0)
                hi = min(file.start + file.size - offsets[index], len(data))
                f.write(data[lo:hi])
        os.fchmod(fd, file.mode)
    finally:
        os.close(fd)
    try:
        os.replace(part, name, src_dir_fd=parent, dst_dir_fd=parent)
    except IsADirectoryError as exc:
        os.unlink(part, dir_fd=parent)
        raise UnsafeTarget(f"{file.path}: a directory is in the way") from exc


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (a folder made only when work comes)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def link_into(source: Path, target: Path) -> None:
    """Puts the tree at ``source`` into ``target`` (created if missing) as hard links to its
    files, replacing files of the same name, as :func:`materialize` writes over what is
    there: a copy of a dataset of gigabytes in the time of a listing. A file the filesystem
    refuses to link (``target`` on another one) is copied; symlinks stay symlinks, folders
    take ``source``'s modes."""
    shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)


def _link_or_copy(source: str, target: str) -> str:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)  # a link would fail on it; a copy would write through its links
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


async def discard_tree(path: Path) -> None:
    """:func:`remove_tree` in a worker thread, carried through even when the caller is being
    cancelled: a task folder holding a dataset of gigabytes takes seconds to delete, which the
    event loop (pings, bids, vouchers) must not wait through, and a cleanup in a ``finally``
    must still happen."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(remove_tree, path)


def remove_tree(path: Path) -> None:
    """Deletes ``path`` and everything under it, also where :func:`materialize` (or a
    workload) left folders without write permission, which ``shutil.rmtree`` skips."""

    def writable_then_retry(func: Any, name: str, _exc: Any) -> None:
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            func(name)

    if path.exists():
        shutil.rmtree(path, onerror=writable_then_retry)
