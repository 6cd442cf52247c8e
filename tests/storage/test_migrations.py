"""Schema migrations: numbering, versioning, failure atomicity, refusing newer schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import Database, open_sync
from storage.errors import SchemaTooNew
from storage.migrations import MIGRATIONS, Migration, user_version, validate_migrations

from ._support import non_trio_threads

M1 = Migration(1, "a table", "CREATE TABLE one (x INTEGER NOT NULL);")
M2 = Migration(2, "another table", "CREATE TABLE two (y TEXT NOT NULL);")


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def test_migrations_apply_from_empty(tmp_path: Path) -> None:
    conn = open_sync(tmp_path / "node.sqlite")
    try:
        assert user_version(conn) == len(MIGRATIONS) >= 1
        assert {"node_meta", "events"} <= tables(conn)
    finally:
        conn.close()


def test_shipped_migrations_are_contiguous() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_reopen_is_a_no_op(tmp_path: Path) -> None:
    # Neither statement is idempotent, so running the migration twice would fail or
    # leave two rows.
    seeded = Migration(1, "seed", "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (42);")
    path = tmp_path / "node.sqlite"
    open_sync(path, [seeded]).close()
    conn = open_sync(path, [seeded])
    try:
        assert user_version(conn) == 1
        assert [tuple(row) for row in conn.execute("SELECT x FROM t")] == [(42,)]
    finally:
        conn.close()


def test_later_migrations_apply_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    open_sync(path, [M1]).close()
    conn = open_sync(path, [M1, M2])
    try:
        assert user_version(conn) == 2
        assert {"one", "two"} <= tables(conn)
    finally:
        conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    open_sync(path, [M1, M2]).close()
    threads_before = non_trio_threads()

    with pytest.raises(SchemaTooNew) as caught:
        await Database.open(path, [M1])

    assert (caught.value.found, caught.value.supported) == (2, 1)
    assert "newer idlegrid" in str(caught.value)
    assert non_trio_threads() == threads_before  # the failed open stopped its thread
    with pytest.raises(SchemaTooNew):
        open_sync(path, [M1])


@pytest.mark.parametrize(
    "versions",
    [[2], [1, 3], [1, 1], [0, 1], [2, 1]],
    ids=["starts-at-2", "gap", "duplicate", "starts-at-0", "out-of-order"],
)
def test_non_contiguous_migrations_are_rejected(tmp_path: Path, versions: list[int]) -> None:
    migrations = [Migration(v, f"step {v}", "SELECT 1;") for v in versions]
    with pytest.raises(ValueError, match="without gaps"):
        validate_migrations(migrations)
    with pytest.raises(ValueError, match="without gaps"):
        open_sync(tmp_path / "node.sqlite", migrations)


def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    # The first statement succeeds before the second fails: it must be rolled back too.
    broken = Migration(2, "broken", "CREATE TABLE two (y); INSERT INTO missing VALUES (1);")
    path = tmp_path / "node.sqlite"

    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        open_sync(path, [M1, broken])

    conn = open_sync(path, [M1])
    try:
        assert user_version(conn) == 1
        assert "one" in tables(conn)
        assert "two" not in tables(conn)
        assert not conn.in_transaction
    finally:
        conn.close()


def test_user_version_is_transactional(tmp_path: Path) -> None:
    """The crash-safety of migrations rests on this sqlite behaviour; pin it down."""
    conn = sqlite3.connect(tmp_path / "plain.sqlite", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("PRAGMA user_version = 7")
        conn.execute("ROLLBACK")
        assert user_version(conn) == 0
    finally:
        conn.close()
