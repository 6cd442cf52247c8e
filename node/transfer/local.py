"""A node's datasets on disk: the chunk store and journal under its data dir, and helpers
that both the CLI and a daemon use."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from consensus.transfer.manifest import Manifest, decode_manifest
from consensus.transfer.plan import DEFAULT_CHUNK_BYTES
from storage import dataset_cache
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.dataset_trees import Trees
from storage.db import open_sync, run_transaction
from storage.transfer_files import build


def trees(root: Path) -> Trees:
    """The datasets written out for tasks on the node whose data dir is ``root``."""
    return Trees(root / "trees")


def chunk_store(root: Path) -> BlobStore:
    """The chunk store of the node whose data dir is ``root`` (apart from the market's blobs,
    whose store deletes other writers' temp files when it opens)."""
    return BlobStore(root / "chunks")


def add(
    db_path: Path, store: BlobStore, path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> tuple[bytes, Manifest]:
    """Chunk ``path`` into ``store``, record it as complete; returns (dataset id, manifest).

    Raises:
        storage.transfer_files.UnsupportedEntry: a link, device or fifo under ``path``.
        FileNotFoundError: ``path`` does not exist.
    """
    built = build(path, store, chunk_bytes)
    now = time.time_ns() // 1_000_000
    conn = open_sync(db_path)
    try:
        run_transaction(conn, lambda c: _record_added(c, built.dataset_id, built.manifest, now))
    finally:
        conn.close()
    return built.dataset_id, built.manifest


def _record_added(
    conn: sqlite3.Connection, dataset_id: bytes, manifest: Manifest, now: int
) -> None:
    journal.open_transfer(conn, dataset_id, manifest, journal.ADDED, now)
    journal.mark_have(conn, dataset_id, range(len(manifest.chunks)), 0, now)
    journal.finish(conn, dataset_id, journal.COMPLETE, None, now)
    dataset_cache.keep(conn, dataset_id)  # added by the operator: never deleted for a task


def is_complete(db_path: Path, dataset_id: bytes) -> bool:
    """Whether the journal records ``dataset_id`` held whole here."""
    conn = open_sync(db_path)
    try:
        return journal.is_complete(conn, dataset_id)
    finally:
        conn.close()


def complete_datasets(db_path: Path, store: BlobStore) -> dict[bytes, Manifest]:
    """Every dataset held whole here (added or fetched), to offer to others."""
    conn = open_sync(db_path)
    try:
        rows = [r for r in journal.transfers(conn) if r.state == journal.COMPLETE]
    finally:
        conn.close()
    return {
        r.dataset_id: decode_manifest(store.get(r.dataset_id.hex()), r.dataset_id)
        for r in rows
        if store.has(r.dataset_id.hex())
    }


@dataclass(frozen=True)
class Removed:
    chunks_deleted: int
    bytes_freed: int
    chunks_kept: int  # shared with another dataset held here


def remove(db_path: Path, store: BlobStore, trees: Trees, dataset_id: bytes) -> Removed:
    """Forgets ``dataset_id`` and deletes its manifest, the chunks no other dataset here
    uses, and its tree. The journal goes first: a crash in between leaves unused chunks
    (space) or a tree the next start sweeps, never a dataset recorded whole whose chunks are
    gone.

    Raises:
        KeyError: nothing is recorded of ``dataset_id`` here.
    """
    conn = open_sync(db_path)
    try:
        if not run_transaction(conn, lambda c: journal.forget(c, dataset_id)):
            raise KeyError(dataset_id.hex())
        others = [r.dataset_id for r in journal.transfers(conn)]
    finally:
        conn.close()
    mine = _chunk_hashes(store, dataset_id)
    shared = set().union(*(_chunk_hashes(store, other) for other in others))
    freed = deleted = 0
    for digest in mine - shared:
        size = _size(store, digest)
        if store.delete(digest):
            freed, deleted = freed + size, deleted + 1
    store.delete(dataset_id.hex())
    freed += trees.remove(dataset_id)
    return Removed(deleted, freed, len(mine & shared))


def _chunk_hashes(store: BlobStore, dataset_id: bytes) -> set[str]:
    if not store.has(dataset_id.hex()):  # a fetch that never got its manifest
        return set()
    manifest = decode_manifest(store.get(dataset_id.hex()), dataset_id)
    return {c.hash.hex() for c in manifest.chunks}


def _size(store: BlobStore, digest: str) -> int:
    try:
        return store.path(digest).stat().st_size
    except FileNotFoundError:
        return 0
