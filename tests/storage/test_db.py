"""The trio facade over the writer thread: round trips, transactions, ordering, lifetime."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from storage.db import Database, open_sync
from storage.errors import StorageClosed

from ._support import non_trio_threads

INSERT_EVENT = "INSERT INTO events (at_ms, kind, body) VALUES (?, ?, ?)"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "node.sqlite") as database:
        yield database


async def test_pragmas_are_applied(db: Database, tmp_path: Path) -> None:
    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
    async_values = {}
    for name in expected:
        row = await db.query_one(f"PRAGMA {name}")
        assert row is not None
        async_values[name] = row[0]
    conn = open_sync(tmp_path / "node.sqlite")
    try:
        sync_values = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in expected}
    finally:
        conn.close()
    assert async_values == expected
    assert sync_values == expected


async def test_execute_query_round_trip(db: Database) -> None:
    assert await db.execute("INSERT INTO node_meta VALUES (?, ?)", ("peer_id", "12D3K")) == 1
    await db.execute("INSERT INTO node_meta VALUES (:k, :v)", {"k": "created_at", "v": "1700"})

    rows = await db.query("SELECT key, value FROM node_meta ORDER BY key")
    assert [(row["key"], row["value"]) for row in rows] == [
        ("created_at", "1700"),
        ("peer_id", "12D3K"),
    ]
    assert await db.execute("UPDATE node_meta SET value = 'x' WHERE key LIKE '%'") == 2
    assert await db.query_one("SELECT value FROM node_meta WHERE key = 'absent'") is None


async def test_sqlite_errors_reach_the_caller_unchanged(db: Database) -> None:
    await db.execute("INSERT INTO node_meta VALUES ('k', 'v')")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        await db.execute("INSERT INTO node_meta VALUES ('k', 'other')")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.query("SELECT * FROM missing")
    # The writer thread survives errors and keeps serving.
    assert await db.query_one("SELECT value FROM node_meta WHERE key = 'k'") is not None


async def test_transaction_commits_and_returns(db: Database) -> None:
    def record(conn: sqlite3.Connection) -> int | None:
        conn.execute(INSERT_EVENT, (1, "a", b"one"))
        return conn.execute(INSERT_EVENT, (2, "b", b"two")).lastrowid

    last_id = await db.transaction(record)
    rows = await db.query("SELECT id, body FROM events ORDER BY id")
    assert [bytes(row["body"]) for row in rows] == [b"one", b"two"]
    assert rows[-1]["id"] == last_id


async def test_transaction_rolls_back_on_exception(db: Database) -> None:
    class Boom(Exception):
        pass

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute(INSERT_EVENT, (1, "a", b""))
        raise Boom

    with pytest.raises(Boom):
        await db.transaction(half_done)
    assert await db.query("SELECT * FROM events") == []
    # And the connection is usable, not stuck inside a transaction.
    assert await db.transaction(lambda conn: conn.in_transaction) is True
    assert await db.execute(INSERT_EVENT, (1, "a", b"")) == 1


async def test_compare_and_set_in_a_transaction(db: Database) -> None:
    await db.execute("INSERT INTO node_meta VALUES ('state', 'open')")

    def close_if_open(conn: sqlite3.Connection) -> bool:
        sql = "UPDATE node_meta SET value = 'closed' WHERE key = 'state' AND value = 'open'"
        return conn.execute(sql).rowcount == 1

    assert await db.transaction(close_if_open) is True
    assert await db.transaction(close_if_open) is False


async def test_concurrent_writers_are_serialised(db: Database) -> None:
    await db.execute("INSERT INTO node_meta VALUES ('counter', '0')")

    def increment(conn: sqlite3.Connection) -> None:
        # Read-modify-write: loses updates unless transactions are serialised.
        (value,) = conn.execute("SELECT value FROM node_meta WHERE key = 'counter'").fetchone()
        conn.execute("UPDATE node_meta SET value = ? WHERE key = 'counter'", (int(value) + 1,))

    async def writer(task: int) -> None:
        for i in range(10):
            await db.execute(INSERT_EVENT, (i, f"task-{task}", b""))
            await db.transaction(increment)

    async with trio.open_nursery() as nursery:
        for task in range(20):
            nursery.start_soon(writer, task)

    row = await db.query_one("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM events")
    assert row is not None
    assert (row["n"], row["ids"]) == (200, 200)
    counter = await db.query_one("SELECT value FROM node_meta WHERE key = 'counter'")
    assert counter is not None
    assert counter["value"] == "200"


async def test_statements_run_in_submission_order(db: Database) -> None:
    submitted: list[int] = []

    async def insert(i: int) -> None:
        # trio runs tasks in a deliberately shuffled order; nothing yields between this
        # append and the job reaching the queue, so this list is the submission order.
        submitted.append(i)
        await db.execute(INSERT_EVENT, (i, "order", b""))

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(insert, i)
    rows = await db.query("SELECT at_ms FROM events ORDER BY id")
    assert [row["at_ms"] for row in rows] == submitted
    assert sorted(submitted) == list(range(50))


async def test_all_statements_run_on_one_writer_thread(db: Database) -> None:
    idents: list[int] = []

    async def record_ident() -> None:
        idents.append(await db.transaction(lambda conn: threading.get_ident()))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(record_ident)
    assert len(idents) == 20
    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()


async def test_close_is_idempotent_and_later_calls_fail(tmp_path: Path) -> None:
    threads_before = non_trio_threads()
    db = await Database.open(tmp_path / "node.sqlite")
    assert len(non_trio_threads()) == len(threads_before) + 1

    async with trio.open_nursery() as nursery:  # concurrent closers both wait for the end
        nursery.start_soon(db.close)
        nursery.start_soon(db.close)
    await db.close()

    assert non_trio_threads() == threads_before
    with pytest.raises(StorageClosed):
        await db.execute("SELECT 1")
    with pytest.raises(StorageClosed):
        await db.query("SELECT 1")
    with pytest.raises(StorageClosed):
        await db.query_one("SELECT 1")
    with pytest.raises(StorageClosed):
        await db.transaction(lambda conn: None)


async def test_statements_queued_before_close_still_run(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    db = await Database.open(path)
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(db.execute, INSERT_EVENT, (i, "late", b""))
        await trio.testing.wait_all_tasks_blocked()  # all five are queued
        await db.close()
    conn = open_sync(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5
    finally:
        conn.close()


async def test_started_statement_finishes_despite_cancellation(db: Database) -> None:
    token = trio.lowlevel.current_trio_token()
    started = trio.Event()
    release = threading.Event()

    results: list[str] = []

    def slow_insert(conn: sqlite3.Connection) -> str:
        conn.execute(INSERT_EVENT, (1, "slow", b""))
        trio.from_thread.run_sync(started.set, trio_token=token)
        release.wait()
        return "committed"

    async def transact_then_checkpoint() -> None:
        results.append(await db.transaction(slow_insert))
        await trio.lowlevel.checkpoint()  # the deferred cancellation lands here
        results.append("not cancelled")

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transact_then_checkpoint)
            await started.wait()
            scope.cancel()
            release.set()  # only now can the shielded wait end

    assert scope.cancelled_caught
    assert results == ["committed"]
    row = await db.query_one("SELECT kind FROM events")
    assert row is not None
    assert row["kind"] == "slow"


async def test_cancelled_call_does_not_start_its_statement(db: Database) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await db.execute(INSERT_EVENT, (1, "never", b""))
    assert scope.cancelled_caught
    assert await db.query("SELECT * FROM events") == []


async def test_open_in_a_cancelled_scope_leaks_no_thread(tmp_path: Path) -> None:
    threads_before = non_trio_threads()
    with trio.CancelScope() as scope:
        scope.cancel()
        await Database.open(tmp_path / "node.sqlite")
    assert scope.cancelled_caught
    assert non_trio_threads() == threads_before
