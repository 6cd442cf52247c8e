"""The market's tables (migration 3): every state change is compare-and-set.

A task or a piece of work moves only ``WHERE state = ? AND revision = ?``: if another writer
(or a replay after a crash) moved it first, the update touches no row and the caller reloads
instead of overwriting. Money is stored as decimal text, since sqlite integers stop at 2**63.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from consensus.kinds import from_wire
from consensus.market.lifecycle import TaskState
from consensus.market.messages import BlobRef, TaskRef
from consensus.market.retention import InUse
from storage.db import Database

# Column names come from this module only, never from input: safe to format into SQL.
_TASK_COLUMNS = {"state", "attempt", "worker", "resume", "result", "result_hash", "reason"}
_WORK_COLUMNS = {"state", "voucher", "vouched_wei", "result", "result_hash", "error"}


@dataclass(frozen=True)
class TaskRow:
    job_id: bytes
    idx: int
    state: TaskState
    revision: int
    attempt: int
    worker: str
    resume: bytes | None
    result: bytes | None
    result_hash: bytes | None
    reason: str

    @property
    def ref(self) -> TaskRef:
        return TaskRef(job_id=self.job_id, task=self.idx, attempt=self.attempt)


@dataclass
class BidRecord:
    """A bid as the requester saw it, kept in memory until its auction closes."""

    worker: str
    price_wei: int
    gpus: int
    est_s: int
    received_ms: int
    outcome: str = ""


class MarketStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- requester: jobs and tasks ------------------------------------------------------

    async def insert_job(self, job: Mapping[str, Any], tasks: int, now_ms: int) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs(job_id, name, spec, state, revision, inputs, inputs_size, "
                "created_ms, deadline_ms, updated_ms) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)",
                (
                    job["job_id"],
                    job["name"],
                    job["spec"],
                    job["inputs"],
                    job["inputs_size"],
                    now_ms,
                    job["deadline_ms"],
                    now_ms,
                ),
            )
            conn.executemany(
                "INSERT INTO tasks(job_id, idx, state, revision, attempt, updated_ms) "
                "VALUES (?, ?, 'queued', 0, 0, ?)",
                [(job["job_id"], i, now_ms) for i in range(tasks)],
            )

        await self.db.transaction(insert)

    async def job(self, job_id: bytes) -> sqlite3.Row | None:
        return await self.db.query_one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))

    async def jobs(self, limit: int = 100) -> list[sqlite3.Row]:
        return await self.db.query("SELECT * FROM jobs ORDER BY created_ms DESC LIMIT ?", (limit,))

    async def find_job(self, prefix: str) -> list[sqlite3.Row]:
        """Jobs whose hex id starts with ``prefix`` (ids are shown shortened)."""
        return await self.db.query(
            "SELECT * FROM jobs WHERE hex(job_id) LIKE ? LIMIT 2", (prefix.upper() + "%",)
        )

    async def set_job_state(self, job_id: bytes, state: str, reason: str, now_ms: int) -> None:
        await self.db.execute(
            "UPDATE jobs SET state = ?, reason = ?, revision = revision + 1, updated_ms = ? "
            "WHERE job_id = ?",
            (state, reason, now_ms, job_id),
        )

    async def open_jobs(self, final: Sequence[str]) -> list[bytes]:
        """Ids of jobs whose row is not in a final state (their tasks may all be)."""
        marks = ",".join("?" * len(final))
        rows = await self.db.query(
            f"SELECT job_id FROM jobs WHERE state NOT IN ({marks})",  # noqa: S608
            tuple(final),
        )
        return [bytes(r["job_id"]) for r in rows]

    async def tasks(self, job_id: bytes) -> list[TaskRow]:
        rows = await self.db.query("SELECT * FROM tasks WHERE job_id = ? ORDER BY idx", (job_id,))
        return [_task_row(r) for r in rows]

    async def workers_in(
        self, job_id: bytes, states: Sequence[str], limit: int
    ) -> list[tuple[str, str]]:
        """(worker, state) of up to ``limit`` of the job's tasks in ``states``, one row per
        worker, in the order of ``states`` (the first state first)."""
        marks = ",".join("?" * len(states))
        rank = " ".join(f"WHEN ? THEN {i}" for i in range(len(states)))
        rows = await self.db.query(
            f"SELECT worker, MIN(CASE state {rank} END) AS r FROM tasks"  # noqa: S608
            f" WHERE job_id = ? AND worker != '' AND state IN ({marks})"
            " GROUP BY worker ORDER BY r, worker LIMIT ?",
            (*states, job_id, *states, limit),
        )
        return [(r["worker"], states[r["r"]]) for r in rows]

    async def task(self, job_id: bytes, idx: int) -> TaskRow:
        row = await self.db.query_one(
            "SELECT * FROM tasks WHERE job_id = ? AND idx = ?", (job_id, idx)
        )
        if row is None:
            raise KeyError(f"no task {job_id.hex()}/{idx}")
        return _task_row(row)

    async def live_tasks(self, terminal: Sequence[str]) -> list[TaskRow]:
        marks = ",".join("?" * len(terminal))
        rows = await self.db.query(
            f"SELECT * FROM tasks WHERE state NOT IN ({marks}) ORDER BY job_id, idx",  # noqa: S608
            tuple(terminal),
        )
        return [_task_row(r) for r in rows]

    async def move_task(self, task: TaskRow, now_ms: int, **values: Any) -> TaskRow | None:
        """Applies ``values`` if the task is still as ``task`` saw it; None if it moved."""
        sets = _assignments(values, _TASK_COLUMNS)
        changed = await self.db.execute(
            f"UPDATE tasks SET {sets}, revision = revision + 1, updated_ms = ? "  # noqa: S608
            "WHERE job_id = ? AND idx = ? AND state = ? AND revision = ?",
            (*values.values(), now_ms, task.job_id, task.idx, task.state, task.revision),
        )
        return await self.task(task.job_id, task.idx) if changed else None

    # --- requester: attempts, bids, checkpoints, logs -------------------------------------

    async def open_attempt(
        self, ref: TaskRef, worker: str, *, addrs: str, price_wei: int, gpus: int, now_ms: int
    ) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO attempts(job_id, idx, attempt, worker, addrs, price_wei, gpus, "
            "started_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref.job_id, ref.task, ref.attempt, worker, addrs, str(price_wei), gpus, now_ms),
        )

    async def attempt(self, ref: TaskRef) -> sqlite3.Row | None:
        return await self.db.query_one(
            "SELECT * FROM attempts WHERE job_id = ? AND idx = ? AND attempt = ?", _key(ref)
        )

    async def attempts(self, job_id: bytes) -> list[sqlite3.Row]:
        return await self.db.query(
            "SELECT * FROM attempts WHERE job_id = ? ORDER BY idx, attempt", (job_id,)
        )

    async def vouched(self, ref: TaskRef, amount_wei: int, voucher: bytes) -> None:
        await self.db.execute(
            "UPDATE attempts SET vouched_wei = ?, voucher = ? "
            "WHERE job_id = ? AND idx = ? AND attempt = ?",
            (str(amount_wei), voucher, *_key(ref)),
        )

    async def close_attempt(
        self, ref: TaskRef, payable_wei: int, outcome: str, now_ms: int
    ) -> None:
        await self.db.execute(
            "UPDATE attempts SET payable_wei = ?, outcome = ?, ended_ms = ? "
            "WHERE job_id = ? AND idx = ? AND attempt = ? AND payable_wei IS NULL",
            (str(payable_wei), outcome, now_ms, *_key(ref)),
        )

    async def record_bids(self, ref: TaskRef, bids: Sequence[BidRecord]) -> None:
        """Writes one auction's bids in one transaction (one fsync, not one per bidder)."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO bids(job_id, idx, attempt, worker, price_wei, gpus, "
                "est_s, received_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*_key(ref), b.worker, str(b.price_wei), b.gpus, b.est_s, b.received_ms,
                  b.outcome) for b in bids],
            )  # fmt: skip

        if bids:
            await self.db.transaction(insert)

    async def bids(self, job_id: bytes) -> list[sqlite3.Row]:
        return await self.db.query(
            "SELECT * FROM bids WHERE job_id = ? ORDER BY idx, attempt, received_ms", (job_id,)
        )

    async def add_checkpoint(
        self, ref: TaskRef, segment: int, *, hash_: bytes, chained: bytes, seconds: int, held: bool
    ) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO checkpoints(job_id, idx, attempt, segment, hash, chained, "
            "seconds, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*_key(ref), segment, hash_, chained, seconds, int(held)),
        )

    async def checkpoints(self, job_id: bytes) -> list[sqlite3.Row]:
        return await self.db.query(
            "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY idx, attempt, segment", (job_id,)
        )

    async def append_logs(self, ref: TaskRef, first_seq: int, lines: list[str]) -> None:
        """Stores an attempt's log lines ``first_seq``, ``first_seq + 1``... (idempotent)."""

        def insert(conn: sqlite3.Connection) -> None:
            # Return nothing: a cursor kept alive past the transaction pins its cached
            # statement, and the next executemany of the same SQL fails with SQLITE_MISUSE.
            conn.executemany(
                "INSERT OR IGNORE INTO task_logs(job_id, idx, attempt, seq, line) "
                "VALUES (?, ?, ?, ?, ?)",
                [(*_key(ref), first_seq + i, line) for i, line in enumerate(lines)],
            )

        await self.db.transaction(insert)

    async def log_count(self, ref: TaskRef) -> int:
        """How many lines of this attempt we hold: where its worker's log resumes."""
        row = await self.db.query_one(
            "SELECT COUNT(*) AS n FROM task_logs WHERE job_id = ? AND idx = ? AND attempt = ?",
            _key(ref),
        )
        return int(row["n"]) if row else 0

    async def logs(self, job_id: bytes, after: int, limit: int = 1000) -> list[sqlite3.Row]:
        return await self.db.query(
            "SELECT rowid AS cursor, idx, line FROM task_logs WHERE job_id = ? AND rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (job_id, after, limit),
        )

    # --- worker: work ---------------------------------------------------------------------

    async def insert_work(self, ref: TaskRef, requester: str, order: bytes, now_ms: int) -> bool:
        inserted = await self.db.execute(
            "INSERT OR IGNORE INTO work(job_id, idx, attempt, requester, ord, state, revision, "
            "started_ms, updated_ms) VALUES (?, ?, ?, ?, ?, 'fetching', 0, ?, ?)",
            (*_key(ref), requester, order, now_ms, now_ms),
        )
        return inserted == 1

    async def work(self, ref: TaskRef) -> sqlite3.Row | None:
        return await self.db.query_one(
            "SELECT * FROM work WHERE job_id = ? AND idx = ? AND attempt = ?", _key(ref)
        )

    async def works(self, states: Sequence[str]) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM work WHERE state IN ({marks})"  # noqa: S608
        return await self.db.query(sql, tuple(states))

    async def move_work(self, ref: TaskRef, expect: str, now_ms: int, **values: Any) -> bool:
        sets = _assignments(values, _WORK_COLUMNS)
        changed = await self.db.execute(
            f"UPDATE work SET {sets}, revision = revision + 1, updated_ms = ? "  # noqa: S608
            "WHERE job_id = ? AND idx = ? AND attempt = ? AND state = ?",
            (*values.values(), now_ms, *_key(ref), expect),
        )
        return changed == 1

    # --- every role: what the task files held here are still needed for -------------------

    async def files_in_use(self, final_jobs: Sequence[str], ended_work: Sequence[str]) -> InUse:
        """Our jobs' results, our open jobs' inputs, and when the oldest open job or running
        task began (for :func:`consensus.market.retention.expired`)."""

        def read(conn: sqlite3.Connection) -> InUse:
            jobs = _not_in("SELECT inputs, created_ms FROM jobs WHERE state", final_jobs)
            work = _not_in("SELECT started_ms FROM work WHERE state", ended_work)
            open_jobs = conn.execute(jobs, tuple(final_jobs)).fetchall()
            starts = [r["created_ms"] for r in open_jobs]
            starts += [r["started_ms"] for r in conn.execute(work, tuple(ended_work))]
            refs = [r["inputs"] for r in open_jobs if r["inputs"] is not None]
            refs += [r[0] for r in conn.execute("SELECT result FROM tasks WHERE result NOT NULL")]
            kept = frozenset(from_wire(BlobRef, msgpack.unpackb(ref)).hash.hex() for ref in refs)
            return InUse(kept=kept, since_ms=min(starts, default=None))

        return await self.db.transaction(read)


def _not_in(select: str, values: Sequence[str]) -> str:
    """``<select> NOT IN (?, ...)``: the placeholders for ``values``."""
    return f"{select} NOT IN ({','.join('?' * len(values))})"


def _assignments(values: Mapping[str, Any], columns: set[str]) -> str:
    """``a = ?, b = ?`` for an UPDATE; only our own column names ever reach the SQL."""
    unknown = set(values) - columns
    if unknown:
        raise ValueError(f"not columns of this table: {sorted(unknown)}")
    return ", ".join(f"{column} = ?" for column in values)


def _key(ref: TaskRef) -> tuple[bytes, int, int]:
    return ref.job_id, ref.task, ref.attempt


def _task_row(row: sqlite3.Row) -> TaskRow:
    return TaskRow(
        job_id=row["job_id"],
        idx=row["idx"],
        state=cast(TaskState, row["state"]),
        revision=row["revision"],
        attempt=row["attempt"],
        worker=row["worker"],
        resume=row["resume"],
        result=row["result"],
        result_hash=row["result_hash"],
        reason=row["reason"],
    )
