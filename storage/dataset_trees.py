"""One read-only copy of each dataset that tasks use, shared by them all through hard links.

A task's dataset used to be written out of the chunk store into the task's folder for every
task, and again for every replay of a sentry's check: a dataset of 50 GB cost 50 GB of writes
(and a minute or more) per task, and as much disk again while it ran. Now a node writes each
dataset once, into ``trees/<dataset id>``, and a task's folder gets hard links to its files:
the time of a listing, no bytes.

Every file in a tree is read-only (mode ``0444``, execute bits kept) and every folder ``0555``,
so an honest workload that opens a dataset file for writing (a memmap ``r+``) fails at once
instead of changing the copy the next task reads; in ``bwrap`` mode the sandbox also binds
the dataset's folder read-only (:mod:`gpu.sandbox`), so not even a chmod gets through.

A tree is written under a temporary name, synced to disk and renamed into place, so a tree
that exists is whole; one left half-written by a crash is deleted when the node starts
(:meth:`Trees.sweep`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from consensus.transfer.manifest import Manifest
from storage.blobs import BlobStore, fsync_dir, syncfs
from storage.transfer_files import materialize, nearest_existing, remove_tree

_PARTIAL, _DOOMED = ".partial-", ".removing-"
FILE_MODE, DIR_MODE = 0o444, 0o555  # read-only for all; the tree sits in the 0700 data dir


class Trees:
    """The shared copies under ``root`` (the node's ``trees`` folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, dataset_id: bytes) -> Path:
        return self.root / dataset_id.hex()

    def has(self, dataset_id: bytes) -> bool:
        return self.path(dataset_id).is_dir()

    def build(self, dataset_id: bytes, manifest: Manifest, store: BlobStore) -> Path:
        """Writes ``dataset_id`` out of ``store`` (whole there; ``manifest`` validated), unless
        its tree is here already; returns the tree.

        Raises:
            storage.errors.CorruptBlob: a stored chunk went bad (quarantined; nothing placed).
            storage.transfer_files.UnsafeTarget: see :func:`materialize`.
        """
        final = self.path(dataset_id)
        if final.is_dir():
            return final
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.root / f"{_PARTIAL}{dataset_id.hex()}"
        remove_tree(partial)
        try:
            materialize(manifest, store, partial)
            _freeze(partial)
            if not syncfs(partial):  # a renamed tree must be whole after a power cut
                os.sync()
            os.rename(partial, final)
            fsync_dir(self.root)
        except BaseException:
            remove_tree(partial)
            raise
        return final

    def remove(self, dataset_id: bytes) -> int:
        """Deletes ``dataset_id``'s tree, if any; returns the bytes that frees now (a file still
        linked from a task's folder is freed when that folder goes)."""
        tree = self.path(dataset_id)
        if not tree.is_dir():
            return 0
        freed = sum(st.st_size for st in _file_stats(tree) if st.st_nlink == 1)
        doomed = self.root / f"{_DOOMED}{dataset_id.hex()}"
        remove_tree(doomed)
        os.rename(tree, doomed)  # first: a deletion cut short must not leave a tree in use
        remove_tree(doomed)
        return freed

    def linkable(self, where: Path) -> bool:
        """Whether a folder at ``where`` (or under its nearest existing parent) is on the
        trees' filesystem, so links to them work there (elsewhere they are copied)."""
        here, there = nearest_existing(self.root), nearest_existing(where)
        return os.stat(here).st_dev == os.stat(there).st_dev

    def sweep(self, whole: Iterable[bytes]) -> list[str]:
        """Deletes what a crash left: half-written trees, and the trees of datasets no longer
        held whole here (``whole``: those that are); returns the names deleted."""
        if not self.root.is_dir():
            return []
        keep = {d.hex() for d in whole}
        gone = [p for p in self.root.iterdir() if p.name not in keep]
        for path in gone:
            remove_tree(path)
        return sorted(p.name for p in gone)


def _freeze(root: Path) -> None:
    """Makes the tree read-only: files ``0444`` (execute bits kept), folders ``0555``.

    A folder is made ``0555`` before the walk enters it, so one the dataset gave no read
    permission (``0300``) is read all the same; a chmod needs no write permission.
    """

    def fail(exc: OSError) -> None:
        raise exc

    os.chmod(root, DIR_MODE)
    for folder, dirs, files in os.walk(root, onerror=fail):
        for name in dirs:
            os.chmod(os.path.join(folder, name), DIR_MODE)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, FILE_MODE | (mode & 0o111))


def _file_stats(root: Path) -> list[os.stat_result]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                found.append(os.lstat(os.path.join(folder, name)))
    return found
