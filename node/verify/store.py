"""Proof-of-compute tables (migration 6): kept attestations, verdicts seen, reputation;
sentries' QoS reports on workers (migration 11); escalations of cross-class misses
(migration 12, never counted as fails); the workers a requester keeps from a task they failed
(migration 22).

:meth:`VerifyStore.failed` answers "did this task attempt fail verification?" for settlement
(a failed attempt is never paid).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import msgpack

from consensus.envelope import open_envelope
from consensus.kinds import Registry, from_wire, to_wire
from consensus.market.messages import Checkpoint, TaskRef
from consensus.verify.messages import VERIFY_KINDS, Escalation, Verdict
from consensus.verify.qos import QosReport
from consensus.verify.verdicts import REP_START, reputation_after
from storage.db import Database


class VerifyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- worker --------------------------------------------------------------------------

    async def keep_attestation(
        self,
        ref: TaskRef,
        sealed: bytes,
        segments: list[tuple[bytes, bytes]],
        now_ms: int,
        points: list[list[bytes]] | None = None,
    ) -> None:
        """Keeps our attestation of a task and, per kept segment, its state hash, checkpoint
        blob and the inner point hashes ``points`` gives for the attested ones (the last
        ``len(points)`` of ``segments``; a resumed run's first is the resume checkpoint)."""
        inner = [b""] * len(segments)
        for position, hashes in enumerate(points or [], start=len(segments) - len(points or [])):
            inner[position] = b"".join(hashes)
        rows = [(h, b, i) for (h, b), i in zip(segments, inner, strict=True)]
        await self.db.execute(
            "INSERT OR REPLACE INTO verify_attested VALUES (?, ?, ?, ?, ?, ?)",
            (ref.job_id, ref.task, ref.attempt, sealed, msgpack.packb(rows), now_ms),
        )

    async def attested(
        self, ref: TaskRef
    ) -> tuple[bytes, list[tuple[bytes, bytes]], list[list[bytes]]] | None:
        """The sealed attestation of a task we ran, [(state hash, checkpoint blob hash)] per
        kept segment, and each kept segment's inner point hashes (empty lists without)."""
        row = await self.db.query_one(
            "SELECT attestation, segments FROM verify_attested "
            "WHERE job_id = ? AND idx = ? AND attempt = ?",
            (ref.job_id, ref.task, ref.attempt),
        )
        if row is None:
            return None
        rows = msgpack.unpackb(row["segments"])  # [hash, blob] before points existed
        points = [_split(r[2]) if len(r) > 2 else [] for r in rows]
        return row["attestation"], [(r[0], r[1]) for r in rows], points

    # --- verdicts ------------------------------------------------------------------------

    async def add_verdict(
        self,
        att_id: bytes,
        sentry: str,
        verdict: Verdict,
        sealed: bytes,
        *,
        evidence: bytes | None,
        now_ms: int,
    ) -> bool:
        """Records a verdict (the first per sentry and attestation); True if it was new, in
        which case the worker's reputation moves."""
        ref = verdict.ref
        added = await self.db.execute(
            "INSERT OR IGNORE INTO verify_verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                att_id,
                sentry,
                ref.job_id,
                ref.task,
                ref.attempt,
                verdict.worker,
                int(verdict.passed),
                verdict.reason,
                evidence,
                sealed,
                now_ms,
            ),
        )
        if added:
            missed = "no answer" in verdict.reason or "refused" in verdict.reason
            event = "pass" if verdict.passed else "missed" if missed else "fail"
            await self._reputation(verdict.worker, event, now_ms)
        return bool(added)

    async def verdicts(self, ref: TaskRef) -> list[dict[str, Any]]:
        rows = await self.db.query(
            "SELECT attestation, sentry, worker, passed, reason, received_ms FROM verify_verdicts "
            "WHERE job_id = ? AND idx = ? AND attempt = ? ORDER BY received_ms",
            (ref.job_id, ref.task, ref.attempt),
        )
        return [dict(r) for r in rows]

    async def failing_verdicts(self, since_ms: int) -> list[Verdict]:
        """Failing verdicts heard since ``since_ms``, as signed (each opened at the time it
        arrived, when it was valid): what a restarted slasher collects its cases from."""
        rows = await self.db.query(
            "SELECT verdict, received_ms FROM verify_verdicts "
            "WHERE passed = 0 AND received_ms >= ?",
            (since_ms,),
        )
        registry = Registry(VERIFY_KINDS)
        opened = [open_envelope(r["verdict"], r["received_ms"], registry) for r in rows]
        return [o.body for o in opened if isinstance(o.body, Verdict)]

    async def add_escalation(
        self, sentry: str, esc: Escalation, sealed: bytes, *, evidence: bytes | None, now_ms: int
    ) -> bool:
        """Records an escalation (the first per sentry and attestation); True if it was new.
        Reputation does not move: a cross-class miss is no fail."""
        ref = esc.ref
        segments = json.dumps(sorted(m.index for m in esc.misses))
        added = await self.db.execute(
            "INSERT OR IGNORE INTO verify_escalations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (esc.attestation, sentry, ref.job_id, ref.task, ref.attempt, esc.worker, segments,
             esc.reason, evidence, sealed, now_ms),
        )  # fmt: skip
        return bool(added)

    async def escalations(self, ref: TaskRef) -> list[dict[str, Any]]:
        rows = await self.db.query(
            "SELECT attestation, sentry, worker, segments, reason, received_ms "
            "FROM verify_escalations WHERE job_id = ? AND idx = ? AND attempt = ? "
            "ORDER BY received_ms",
            (ref.job_id, ref.task, ref.attempt),
        )
        return [dict(r) | {"segments": json.loads(r["segments"])} for r in rows]

    async def handed_over(self, ref: TaskRef, segment: int) -> Checkpoint | None:
        """The checkpoint closing ``segment`` that this requester held from an earlier attempt
        at the task: what a resumed attempt's order named as its start (market's table)."""
        row = await self.db.query_one(
            "SELECT hash, chained, seconds FROM checkpoints WHERE job_id = ? AND idx = ? "
            "AND attempt < ? AND segment = ? AND held = 1 ORDER BY attempt DESC LIMIT 1",
            (ref.job_id, ref.task, ref.attempt, segment),
        )
        if row is None:
            return None
        return Checkpoint(
            index=segment, hash=row["hash"], chained=row["chained"], seconds=row["seconds"]
        )

    async def first_segment(self, ref: TaskRef) -> int | None:
        """The first segment an attempt reported (above 0: it resumed), or None."""
        row = await self.db.query_one(
            "SELECT MIN(segment) AS first FROM checkpoints WHERE job_id = ? AND idx = ? "
            "AND attempt = ?",
            (ref.job_id, ref.task, ref.attempt),
        )
        return None if row is None or row["first"] is None else int(row["first"])

    async def failed(self, ref: TaskRef) -> bool:
        """Whether any sentry's verdict on this attempt is a fail: settlement pays it not."""
        row = await self.db.query_one(
            "SELECT 1 FROM verify_verdicts WHERE job_id = ? AND idx = ? AND attempt = ? "
            "AND passed = 0 LIMIT 1",
            (ref.job_id, ref.task, ref.attempt),
        )
        return row is not None

    # --- workers kept from a task (requester) -------------------------------------------

    async def exclude(self, ref: TaskRef, worker: str, until_ms: int, now_ms: int) -> None:
        """Keeps ``worker`` from ``ref``'s task until ``until_ms`` (the later one wins), and
        drops the exclusions over by ``now_ms``."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM verify_excluded WHERE until_ms <= ?", (now_ms,))
            conn.execute(
                "INSERT INTO verify_excluded VALUES (?, ?, ?, ?) ON CONFLICT (job_id, idx, "
                "worker) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms)",
                (ref.job_id, ref.task, worker, until_ms),
            )

        await self.db.transaction(write)

    async def exclusions(self, now_ms: int) -> list[tuple[bytes, int, str, int]]:
        """Every (job, task, worker, until_ms) still in force; drops those that are not."""

        def read(conn: sqlite3.Connection) -> list[tuple[bytes, int, str, int]]:
            conn.execute("DELETE FROM verify_excluded WHERE until_ms <= ?", (now_ms,))
            rows = conn.execute("SELECT job_id, idx, worker, until_ms FROM verify_excluded")
            return [(r[0], int(r[1]), r[2], int(r[3])) for r in rows]

        return await self.db.transaction(read)

    # --- reputation ----------------------------------------------------------------------

    async def reputation(self, peer: str) -> int:
        row = await self.db.query_one(
            "SELECT score FROM verify_reputation WHERE peer_id = ?", (peer,)
        )
        return REP_START if row is None else int(row["score"])

    async def reputations(self) -> dict[str, int]:
        rows = await self.db.query("SELECT peer_id, score FROM verify_reputation")
        return {r["peer_id"]: int(r["score"]) for r in rows}

    async def missed(self, peer: str, now_ms: int) -> None:
        """A duty ``peer`` did not do (a sentry that committed to a seed share and never
        revealed it): its reputation falls as for a missed challenge. Gossip can lose a
        reveal too, so the step is the small one, not a fail's."""
        await self._reputation(peer, "missed", now_ms)

    async def _reputation(self, peer: str, event: str, now_ms: int) -> None:
        """Moves ``peer``'s score by one event, read and written in one transaction."""

        def move(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT score FROM verify_reputation WHERE peer_id = ?", (peer,)
            ).fetchone()
            score = reputation_after(REP_START if row is None else int(row[0]), event)  # type: ignore[arg-type]
            passed, failed = int(event == "pass"), int(event != "pass")
            conn.execute(
                "INSERT INTO verify_reputation VALUES (?, ?, ?, ?, ?) ON CONFLICT(peer_id) DO "
                "UPDATE SET score = excluded.score, passes = passes + excluded.passes, "
                "fails = fails + excluded.fails, updated_ms = excluded.updated_ms",
                (peer, score, passed, failed, now_ms),
            )

        await self.db.transaction(move)

    # --- QoS reports ---------------------------------------------------------------------

    async def keep_qos(self, sentry: str, report: QosReport, now_ms: int) -> None:
        """Keeps ``sentry``'s latest report on its worker; drops expired ones."""

        def keep(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM verify_qos WHERE expires_ms <= ?", (now_ms,))
            conn.execute(
                "INSERT INTO verify_qos VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(worker, sentry) "
                "DO UPDATE SET flagged = excluded.flagged, measured = excluded.measured, "
                "report = excluded.report, expires_ms = excluded.expires_ms, "
                "received_ms = excluded.received_ms WHERE excluded.expires_ms >= expires_ms",
                (report.worker, sentry, int(report.flagged), report.measured,
                 msgpack.packb(to_wire(report)), report.expires_ms, now_ms),
            )  # fmt: skip

        await self.db.transaction(keep)

    async def qos_reports(self, now_ms: int) -> list[tuple[str, QosReport]]:
        """(sentry, report) of every report not yet expired."""
        rows = await self.db.query(
            "SELECT sentry, report FROM verify_qos WHERE expires_ms > ?", (now_ms,)
        )
        return [(r["sentry"], from_wire(QosReport, msgpack.unpackb(r["report"]))) for r in rows]


def _split(joined: bytes) -> list[bytes]:
    return [joined[i : i + 32] for i in range(0, len(joined), 32)]
