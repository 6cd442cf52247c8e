"""The worker's dataset cache: datasets it fetched for tasks, and when a task last used each.

Plain functions over a ``sqlite3.Connection``, like :mod:`storage.transfer_journal`; a row goes
with its transfer row (``data rm``, an eviction), and an operator's own ``data get`` of the
same dataset takes it out of the cache (:func:`keep`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable


def use(conn: sqlite3.Connection, dataset_id: bytes, now_ms: int) -> None:
    """Records that a task used ``dataset_id`` now; it is in the cache from here on (if the
    journal has a transfer of it: a fetch that never got its manifest left nothing)."""
    conn.execute(
        "INSERT INTO dataset_cache (dataset_id, used_ms)"
        " SELECT dataset_id, ? FROM transfers WHERE dataset_id = ? AND true"
        " ON CONFLICT (dataset_id) DO UPDATE SET used_ms = max(used_ms, excluded.used_ms)",
        (now_ms, dataset_id),
    )


def touch(conn: sqlite3.Connection, ids: Iterable[bytes], now_ms: int) -> None:
    """A task used these now; only those in the cache are recorded (the operator's stay out)."""
    conn.executemany(
        "UPDATE dataset_cache SET used_ms = max(used_ms, ?) WHERE dataset_id = ?",
        [(now_ms, dataset_id) for dataset_id in ids],
    )


def keep(conn: sqlite3.Connection, dataset_id: bytes) -> None:
    """The operator wants ``dataset_id``: it leaves the cache and is never evicted."""
    conn.execute("DELETE FROM dataset_cache WHERE dataset_id = ?", (dataset_id,))


def cached(conn: sqlite3.Connection) -> dict[bytes, int]:
    """Every cached dataset and when a task last used it."""
    rows = conn.execute("SELECT dataset_id, used_ms FROM dataset_cache")
    return {bytes(r[0]): r[1] for r in rows}
