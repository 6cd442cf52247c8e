"""The node's sqlite database: one writer thread that owns the connection, a trio facade.

sqlite calls block, and aiosqlite only runs under asyncio, so every statement runs on one
dedicated ``threading.Thread``. A single thread and a single connection give us, for free:
statements run in the order tasks submitted them, a transaction can never interleave with
another task's statements, and the connection is never shared between threads
(``check_same_thread`` stays on to prove it).

The same pragmas and migrations back :func:`open_sync`, used by CLI commands that run
without trio (``idlegrid init``).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar

import outcome
import trio

from storage.errors import StorageClosed, StorageError
from storage.migrations import MIGRATIONS, Migration, apply_migrations

T = TypeVar("T")
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]

# (pragma, value we set, value sqlite reports back once it took effect). Several of these
# are silently ignored rather than rejected (journal_mode on a filesystem without shared
# memory, foreign_keys inside a transaction), so each one is read back and checked.
_PRAGMAS: tuple[tuple[str, str, object], ...] = (
    # Readers do not block the writer, and a commit is one append to the log.
    ("journal_mode", "WAL", "wal"),
    ("foreign_keys", "ON", 1),
    # This database holds money: with WAL, NORMAL may lose the last commits on power loss;
    # FULL fsyncs the log on every commit, so a commit that returned is durable.
    ("synchronous", "FULL", 2),
    # Another process (the CLI) may briefly hold the write lock; wait rather than fail.
    ("busy_timeout", "5000", 5000),
)


def configure(conn: sqlite3.Connection) -> None:
    """Apply and verify the pragmas every connection to a node database needs.

    ``journal_mode`` persists in the file, but the others are per connection, so this runs
    on every open, outside any transaction.

    Raises:
        StorageError: a pragma did not take effect (e.g. WAL on a network filesystem).
    """
    conn.row_factory = sqlite3.Row
    for name, value, expected in _PRAGMAS:
        conn.execute(f"PRAGMA {name} = {value}")
        actual = conn.execute(f"PRAGMA {name}").fetchone()[0]
        if actual != expected:
            raise StorageError(f"PRAGMA {name} = {value} did not take effect (got {actual!r})")


def open_sync(path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> sqlite3.Connection:
    """Open a node database synchronously, configured and migrated, for code without trio.

    The connection is in autocommit mode (``isolation_level=None``): use
    :func:`run_transaction` to group statements. It may only be used from the calling
    thread. :class:`Database` opens its connection with this same function.

    Raises:
        SchemaTooNew: the file was migrated by a newer idlegrid.
        StorageError: a pragma did not take effect.
        sqlite3.Error: the file could not be opened or a migration failed.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        configure(conn)
        apply_migrations(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def run_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back if anything raises.

    IMMEDIATE takes the write lock up front, so a read-check-write (compare-and-set) cannot
    fail halfway with SQLITE_BUSY when a deferred read lock would need upgrading.
    ``fn`` must not commit or roll back itself.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (SQLITE_FULL, SQLITE_IOERR) already rolled back; a second ROLLBACK
        # would raise and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class _Job(Generic[T]):
    """One unit of work handed to the writer thread, and the way back to the waiting task."""

    def __init__(self, fn: Callable[[], T], *, last: bool = False) -> None:
        self.last = last
        self._fn = fn
        self._token = trio.lowlevel.current_trio_token()
        self._done = trio.Event()
        self._result: outcome.Value[T] | outcome.Error | None = None

    def run(self) -> None:
        """Run on the writer thread; never raises, the outcome travels back to the task."""
        self._result = outcome.capture(self._fn)
        # The waiter is shielded, so its run can only be gone if it crashed outright;
        # then nobody is left to tell, and the writer thread must keep serving.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._done.set)

    async def wait(self) -> T:
        # Shielded, like trio.to_thread.run_sync's default: once a statement has started,
        # the caller must see how it ended (a COMMIT may already be on disk). A pending
        # cancellation is delivered at the caller's next checkpoint instead.
        with trio.CancelScope(shield=True):
            await self._done.wait()
        assert self._result is not None
        return self._result.unwrap()


class Database:
    """A node's sqlite database, usable from any trio task.

    Open with :meth:`open` and close with :meth:`close`, or use it as an async context
    manager that closes on exit::

        async with await Database.open(data_dir / "node.sqlite") as db:
            await db.execute("INSERT INTO node_meta VALUES (?, ?)", ("created_at", now))

    ``sqlite3.Error`` from a statement reaches the caller unchanged (compare-and-set relies
    on catching ``sqlite3.IntegrityError``). Rows are ``sqlite3.Row``.

    Cancellation: a call that is already cancelled does not start its statement; a call
    whose statement has started waits for it to finish, shielded, and returns its result.
    """

    def __init__(self, path: Path) -> None:
        """Start the writer thread; use :meth:`open`, which also connects and migrates."""
        self.path = path
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None  # touched only on the writer thread
        self._closing = False
        self._closed = trio.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"idlegrid-sqlite:{path.name}", daemon=True
        )
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> Database:
        """Connect to ``path`` (created if missing), apply pragmas and pending migrations.

        Raises:
            SchemaTooNew: the file was migrated by a newer idlegrid.
            StorageError: a pragma did not take effect.
            sqlite3.Error: the file could not be opened or a migration failed.
        """
        db = cls(path)
        try:
            await db._call(lambda: db._connect(migrations))
        except BaseException:
            await db.close()
            raise
        return db

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode and return its rowcount."""
        return await self._with_conn(lambda conn: conn.execute(sql, params).rowcount)

    async def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one statement and return all its rows."""
        return await self._with_conn(lambda conn: conn.execute(sql, params).fetchall())

    async def query_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """Run one statement and return its first row, or None if it produced none."""
        return await self._with_conn(lambda conn: conn.execute(sql, params).fetchone())

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` atomically on the writer thread and return its result.

        This is the way to do compare-and-set: read, check and write inside ``fn`` and
        nothing else can run in between. ``fn`` is synchronous and runs on the writer
        thread, so it must not block on anything but sqlite; if it raises, everything it
        did is rolled back and the exception reaches the caller.
        """
        return await self._with_conn(lambda conn: run_transaction(conn, fn))

    async def close(self) -> None:
        """Finish queued statements, close the connection and stop the writer thread.

        Idempotent; a concurrent second call waits for the first to finish. Shielded from
        cancellation so the thread is never leaked. Calls made after this raise
        :class:`StorageClosed`.
        """
        with trio.CancelScope(shield=True):
            if self._closing:
                await self._closed.wait()
                return
            self._closing = True
            # Queued behind every statement already submitted, so those still run.
            job = _Job(self._disconnect, last=True)
            self._jobs.put(job)
            try:
                await job.wait()
            finally:
                # The job was the thread's last act: it is only returning, so this does
                # not block the event loop in any way that matters. Not using
                # trio.to_thread here keeps trio's worker cache from holding an extra
                # thread for seconds after close.
                self._thread.join()
                self._closed.set()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda: fn(self._connection()))

    async def _call(self, fn: Callable[[], T]) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            raise StorageClosed(f"database {self.path} is closed")
        job = _Job(fn)
        self._jobs.put(job)
        return await job.wait()

    # --- writer thread only below ---

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            job.run()
            if job.last:
                return

    def _connect(self, migrations: Sequence[Migration]) -> None:
        self._conn = open_sync(self.path, migrations)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageClosed(f"database {self.path} is not open")
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
