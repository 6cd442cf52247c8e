"""The transfer journal: per dataset, which chunks are held and verified, and what sources did.

Plain functions over a ``sqlite3.Connection`` (run them through :class:`storage.db.Database`
from trio, or :func:`storage.db.open_sync` from the CLI). Each write is one transaction, so a
kill -9 loses at most the chunks verified since the last :func:`mark_have`; those are in the
chunk store already and :func:`reconcile` finds them there, so they do not move again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.transfer.manifest import Manifest
from consensus.transfer.schedule import SourceStats

ADDED, FETCHED = "added", "fetched"
FETCHING, COMPLETE, FAILED = "fetching", "complete", "failed"


@dataclass(frozen=True)
class TransferRow:
    dataset_id: bytes
    origin: str
    state: str
    chunks_total: int
    chunks_have: int
    bytes_total: int
    bytes_have: int
    bytes_moved: int
    chunks_moved: int
    error: str | None
    updated_ms: int
    chunk_bytes: int  # the largest chunk: the size the dataset was cut in


def open_transfer(
    conn: sqlite3.Connection, dataset_id: bytes, manifest: Manifest, origin: str, now_ms: int
) -> None:
    """Record the dataset and its chunks (all missing) unless already recorded; idempotent."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO transfers (dataset_id, origin, state, chunks_total, bytes_total,"
        " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (dataset_id, origin, FETCHING, len(manifest.chunks), manifest.total_bytes, now_ms, now_ms),
    )
    if cur.rowcount:
        conn.executemany(
            "INSERT INTO transfer_chunks (dataset_id, idx, size, have) VALUES (?, ?, ?, 0)",
            ((dataset_id, i, c.size) for i, c in enumerate(manifest.chunks)),
        )


def missing(conn: sqlite3.Connection, dataset_id: bytes) -> list[int]:
    rows = conn.execute(
        "SELECT idx FROM transfer_chunks WHERE dataset_id = ? AND have = 0 ORDER BY idx",
        (dataset_id,),
    )
    return [r[0] for r in rows]


def reconcile(
    conn: sqlite3.Connection, dataset_id: bytes, manifest: Manifest, held: Callable[[str], bool]
) -> int:
    """Make the journal agree with the store; returns how many chunks were found there.

    Missing chunks the store holds (another dataset's, or verified just before a crash) become
    held; held chunks the store lost (deleted, or quarantined when found corrupt) become
    missing again, so the next fetch moves them.
    """
    absent = set(missing(conn, dataset_id))
    found = [i for i in sorted(absent) if held(manifest.chunks[i].hash.hex())]
    lost = [
        (dataset_id, i)
        for i, c in enumerate(manifest.chunks)
        if i not in absent and not held(c.hash.hex())
    ]
    conn.executemany("UPDATE transfer_chunks SET have = 0 WHERE dataset_id = ? AND idx = ?", lost)
    mark_have(conn, dataset_id, found, moved_bytes=0, now_ms=None)
    return len(found)


def mark_have(
    conn: sqlite3.Connection,
    dataset_id: bytes,
    indices: Iterable[int],
    moved_bytes: int,
    now_ms: int | None,
) -> None:
    """Chunks verified and stored; ``moved_bytes`` of wire traffic brought them."""
    indices = list(indices)
    conn.executemany(
        "UPDATE transfer_chunks SET have = 1 WHERE dataset_id = ? AND idx = ?",
        ((dataset_id, i) for i in indices),
    )
    if now_ms is not None:
        conn.execute(
            "UPDATE transfers SET bytes_moved = bytes_moved + ?, chunks_moved = chunks_moved + ?,"
            " updated_ms = ? WHERE dataset_id = ?",
            (moved_bytes, len(indices), now_ms, dataset_id),
        )


def finish(
    conn: sqlite3.Connection, dataset_id: bytes, state: str, error: str | None, now_ms: int
) -> None:
    conn.execute(
        "UPDATE transfers SET state = ?, error = ?, updated_ms = ? WHERE dataset_id = ?",
        (state, error, now_ms, dataset_id),
    )


def record_sources(
    conn: sqlite3.Connection, dataset_id: bytes, sources: dict[str, SourceStats]
) -> None:
    """Add this run's per-source figures to the totals."""
    conn.executemany(
        "INSERT INTO transfer_sources VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (dataset_id, peer_id) DO UPDATE SET chunks = chunks + excluded.chunks,"
        " bytes = bytes + excluded.bytes, busy_ms = busy_ms + excluded.busy_ms,"
        " failures = failures + excluded.failures, corrupt = corrupt + excluded.corrupt",
        (
            (dataset_id, peer, s.chunks, s.bytes, s.busy_ms, s.failures, s.corrupt)
            for peer, s in sources.items()
        ),
    )


def transfers(conn: sqlite3.Connection, dataset_id: bytes | None = None) -> list[TransferRow]:
    """Every recorded transfer (or just one), newest first, with what is held so far."""
    rows = conn.execute(
        "SELECT t.dataset_id, t.origin, t.state, t.chunks_total,"
        " COALESCE(SUM(c.have), 0), t.bytes_total, COALESCE(SUM(c.have * c.size), 0),"
        " t.bytes_moved, t.chunks_moved, t.error, t.updated_ms, COALESCE(MAX(c.size), 0)"
        " FROM transfers t LEFT JOIN transfer_chunks c ON c.dataset_id = t.dataset_id"
        " WHERE ? IS NULL OR t.dataset_id = ?"
        " GROUP BY t.dataset_id ORDER BY t.updated_ms DESC",
        (dataset_id, dataset_id),
    )
    return [TransferRow(*tuple(r)) for r in rows]


def is_complete(conn: sqlite3.Connection, dataset_id: bytes) -> bool:
    """Whether ``dataset_id`` is recorded held whole here."""
    row = conn.execute("SELECT state FROM transfers WHERE dataset_id = ?", (dataset_id,))
    found = row.fetchone()
    return found is not None and found[0] == COMPLETE


def sources(conn: sqlite3.Connection, dataset_id: bytes) -> dict[str, SourceStats]:
    rows = conn.execute(
        "SELECT peer_id, chunks, bytes, busy_ms, failures, corrupt FROM transfer_sources"
        " WHERE dataset_id = ? ORDER BY peer_id",
        (dataset_id,),
    )
    return {r[0]: SourceStats(*tuple(r)[1:]) for r in rows}


def forget(conn: sqlite3.Connection, dataset_id: bytes) -> bool:
    """Drops everything recorded of ``dataset_id`` (its chunks and sources cascade, grants and
    probes go too); returns whether there was a transfer row."""
    conn.execute("DELETE FROM transfer_grants WHERE dataset_id = ?", (dataset_id,))
    conn.execute("DELETE FROM transfer_probes WHERE dataset_id = ?", (dataset_id,))
    return conn.execute("DELETE FROM transfers WHERE dataset_id = ?", (dataset_id,)).rowcount > 0
