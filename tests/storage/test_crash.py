"""kill -9 a writer and check that everything it reported as done is intact.

A child process reports each row id / blob digest on stdout only after the commit / put has
returned, so every reported item is a durability claim. The parent waits on those lines
(never on time), kills the child with SIGKILL, and checks the claims plus the store's own
consistency. SIGKILL does not lose the page cache, so this tests atomicity and the
commit/rename protocol, not fsync against power loss.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from storage.blobs import BlobStore
from storage.db import open_sync

from ._support import LineReader, start_child

pytestmark = pytest.mark.slow

TIMEOUT_S = 30

# argv: db path, number of commits before hanging mid-transaction (-1: never hang).
DB_CHILD = """
import sys
from pathlib import Path
from storage.db import open_sync, run_transaction

conn = open_sync(Path(sys.argv[1]))
hang_after = int(sys.argv[2])

def insert(c):
    sql = "INSERT INTO events (at_ms, kind, body) VALUES (0, 'crash', randomblob(512))"
    return c.execute(sql).lastrowid

def insert_and_hang(c):
    print("uncommitted", insert(c), flush=True)
    sys.stdin.readline()  # the parent kills us here, inside the transaction

done = 0
while done != hang_after:
    print(run_transaction(conn, insert), flush=True)
    done += 1
run_transaction(conn, insert_and_hang)
"""

# argv: blob root, number of puts before hanging halfway through one (-1: never hang).
BLOB_CHILD = """
import os, sys
from pathlib import Path
from storage.blobs import BlobStore

store = BlobStore(Path(sys.argv[1]))
hang_after = int(sys.argv[2])

def half_then_hang():
    yield os.urandom(1 << 19)
    print("partial", flush=True)
    sys.stdin.readline()  # the parent kills us here, with a half-written temp file
    yield os.urandom(1 << 19)

done = 0
while done != hang_after:
    print(store.put(os.urandom(1 << 20)), flush=True)
    done += 1
store.put_stream(half_then_hang())
"""


async def run_and_kill(code: str, path: Path, *, hang_after: int, kill_after: int) -> list[str]:
    """Run a child until it has printed ``kill_after`` lines, SIGKILL it, return all lines.

    Lines already in the pipe when the child died are returned too: they were printed
    after their commit, so they are claims like the others.
    """
    proc = await start_child(code, str(path), str(hang_after))
    assert proc.stdout is not None
    lines = LineReader(proc.stdout)
    seen: list[str] = []
    try:
        with trio.fail_after(TIMEOUT_S):
            while len(seen) < kill_after:
                line = await lines.readline()
                assert line is not None, f"child exited early after {seen!r}"
                seen.append(line)
            os.kill(proc.pid, signal.SIGKILL)
            seen.extend(await lines.read_all())
            await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()
    assert proc.returncode == -signal.SIGKILL
    return seen


def committed_ids(path: Path) -> set[int]:
    conn = open_sync(path)
    try:
        assert [tuple(row) for row in conn.execute("PRAGMA integrity_check")] == [("ok",)]
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


async def test_committed_rows_survive_kill9(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    reported: set[int] = set()
    for _ in range(3):  # each round also recovers the previous round's crashed WAL
        lines = await run_and_kill(DB_CHILD, path, hang_after=-1, kill_after=50)
        reported |= {int(line) for line in lines}
        present = committed_ids(path)
        assert reported <= present
    assert len(reported) >= 150


async def test_transaction_open_at_kill9_leaves_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    lines = await run_and_kill(DB_CHILD, path, hang_after=10, kill_after=11)
    *committed, uncommitted = lines
    assert uncommitted.startswith("uncommitted ")
    hanging_id = int(uncommitted.split()[1])

    present = committed_ids(path)

    assert {int(line) for line in committed} == present
    assert hanging_id not in present
    # The dead writer's lock is gone: a new writer gets in without waiting.
    conn = open_sync(path)
    try:
        conn.execute("INSERT INTO node_meta VALUES ('after', 'crash')")
    finally:
        conn.close()


def check_blob_store(root: Path, reported: set[str]) -> BlobStore:
    store = BlobStore(root)
    assert list((root / "tmp").iterdir()) == []
    stored = set(store.iter_digests())
    assert reported <= stored
    # No half-written or corrupt blob is ever visible under a final name.
    for digest in stored:
        assert store.verify(digest), digest
    assert list((root / "quarantine").iterdir()) == []
    return store


async def test_reported_blobs_survive_kill9(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    reported: set[str] = set()
    for _ in range(2):
        lines = await run_and_kill(BLOB_CHILD, root, hang_after=-1, kill_after=6)
        reported |= set(lines)
        check_blob_store(root, reported)
    assert len(reported) >= 12


async def test_half_written_blob_is_invisible_after_kill9(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    lines = await run_and_kill(BLOB_CHILD, root, hang_after=3, kill_after=4)
    *digests, marker = lines
    assert marker == "partial"
    leftovers = list((root / "tmp").iterdir())
    assert len(leftovers) == 1
    assert leftovers[0].stat().st_size == 1 << 19

    store = check_blob_store(root, set(digests))

    assert set(store.iter_digests()) == set(digests)
