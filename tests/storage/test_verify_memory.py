"""The requester's exclusions and the QoS view are bounded, on a real sqlite file: a failing
verdict excludes its worker from our own job's task until that job can auction no more (other
requesters' tasks are never auctioned here, so not kept), and QoS reports go once expired, at
most a fixed number per worker; within those horizons the answers are as before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from node.market.store import MarketStore
from node.verify import qos_view
from node.verify.qos_view import SWEEP_MS, QosView
from node.verify.requester import EXCLUDED_PAST_DEADLINE_MS, Verdicts
from node.verify.store import VerifyStore
from storage.db import Database, open_sync
from storage.migrations import MIGRATIONS
from tests.storage.test_qos_view import NOW, report

OURS = TaskRef(job_id=b"o" * 16, task=0, attempt=0)
THEIRS = TaskRef(job_id=b"t" * 16, task=0, attempt=0)
DEADLINE = NOW + 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def now_ms(self) -> int:
        return self.now


def failing(ref: TaskRef, worker: str) -> Verdict:
    return Verdict(expires_ms=10**13, nonce=worker.encode().ljust(16, b"n"), ref=ref,
                   worker=worker, attestation=worker.encode().ljust(32, b"a"), passed=False,
                   sampled=[0], seed=b"s" * 32, evidence=b"e" * 32)  # fmt: skip


async def our_job(db: Database, ref: TaskRef) -> None:
    job = {"job_id": ref.job_id, "name": "ours", "spec": "{}", "inputs": None,
           "inputs_size": 0, "deadline_ms": DEADLINE}  # fmt: skip
    await MarketStore(db).insert_job(job, 2, NOW)


async def test_failed_workers_are_excluded_from_our_tasks_until_the_job_ends(
    tmp_path: Path,
) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await our_job(db, OURS)
        clock = Clock()
        verdicts = Verdicts(clock, VerifyStore(db), 1, lambda: True)  # type: ignore[arg-type]
        await verdicts._heard(failing(OURS, "cheat"), "sentry", b"raw")
        await verdicts._heard(failing(THEIRS, "cheat"), "sentry", b"raw")
        assert not verdicts.excluded(replace(THEIRS, attempt=1), "cheat"), "not ours: not kept"
        clock.now = DEADLINE + EXCLUDED_PAST_DEADLINE_MS - 1
        await verdicts._heard(failing(replace(OURS, task=1), "other"), "sentry", b"raw")
        assert verdicts.excluded(replace(OURS, attempt=1), "cheat"), "as long as the job lives"
        assert set(verdicts.failed_on) == {(OURS.job_id, 0), (OURS.job_id, 1)}
        clock.now = DEADLINE + EXCLUDED_PAST_DEADLINE_MS
        await verdicts._heard(failing(THEIRS, "third"), "sentry", b"raw")
        assert verdicts.failed_on == {} and verdicts.excluded_until == {}, "the job is over"


async def test_a_restarted_requester_still_keeps_the_cheat_from_its_task(tmp_path: Path) -> None:
    clock = Clock()
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await our_job(db, OURS)
        before = Verdicts(clock, VerifyStore(db), 1, lambda: True)  # type: ignore[arg-type]
        await before._heard(failing(OURS, "cheat"), "sentry", b"raw")
    async with await Database.open(tmp_path / "node.sqlite") as db:
        after = Verdicts(clock, VerifyStore(db), 1, lambda: True)  # type: ignore[arg-type]
        await after._load_exclusions()
        assert after.excluded(replace(OURS, attempt=1), "cheat"), "kept across the restart"
        assert not after.excluded(replace(OURS, attempt=1), "honest")
        clock.now = DEADLINE + EXCLUDED_PAST_DEADLINE_MS
        late = Verdicts(clock, VerifyStore(db), 1, lambda: True)  # type: ignore[arg-type]
        await late._load_exclusions()
        assert late.failed_on == {}, "the job is over"
        assert await db.query("SELECT * FROM verify_excluded") == [], "and its rows are gone"


async def test_an_exclusion_written_drops_those_over(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = VerifyStore(db)
        await store.exclude(OURS, "old", until_ms=NOW, now_ms=NOW - 1)
        await store.exclude(replace(OURS, task=1), "new", until_ms=NOW + 10, now_ms=NOW)
        rows = await db.query("SELECT worker FROM verify_excluded")
        assert [r["worker"] for r in rows] == ["new"], "a running node never restarts to sweep"


def test_the_migration_carries_over_failing_verdicts_of_our_jobs(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    conn = open_sync(path, MIGRATIONS[:21])
    conn.execute("INSERT INTO jobs (job_id, name, spec, state, revision, inputs_size, "
                 "created_ms, deadline_ms, updated_ms) VALUES (?, 'j', '{}', 'running', 1, 0, "
                 "0, ?, 0)", (OURS.job_id, DEADLINE))  # fmt: skip
    for job, worker, passed in [(OURS, "cheat", 0), (OURS, "honest", 1), (THEIRS, "x", 0)]:
        conn.execute("INSERT INTO verify_verdicts VALUES (?, 's', ?, 0, 0, ?, ?, '', NULL, "
                     "x'00', 0)", (worker.encode(), job.job_id, worker, passed))  # fmt: skip
    conn.commit()
    conn.close()
    conn = open_sync(path)
    rows = conn.execute("SELECT job_id, idx, worker, until_ms FROM verify_excluded").fetchall()
    assert [tuple(r) for r in rows] == [
        (OURS.job_id, 0, "cheat", DEADLINE + EXCLUDED_PAST_DEADLINE_MS)
    ]
    conn.close()


async def test_a_task_we_wait_on_is_excluded_even_without_a_job_row(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = VerifyStore(db)
        verdicts = Verdicts(Clock(), store, 1, lambda: True)  # type: ignore[arg-type]
        await verdicts._heard(failing(THEIRS, "cheat"), "sentry", b"raw")
        assert not verdicts.excluded(THEIRS, "cheat")
        assert (await verdicts.outcome(THEIRS, timeout_ms=0))[0] == "rejected"
        assert verdicts.excluded(replace(THEIRS, attempt=1), "cheat"), "outcome() is for ours"


async def test_expired_reports_go_and_a_worker_keeps_a_bounded_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qos_view, "REPORTS_PER_WORKER", 3)
    later = NOW + 200_000
    async with await Database.open(tmp_path / "node.sqlite") as db:
        clock, sentries = Clock(), [f"s{i}" for i in range(5)]
        view = QosView(clock, VerifyStore(db), lambda: sentries)  # type: ignore[arg-type]
        await view.record(report("gone", flagged=True, expires_ms=NOW + 1_000), "s0")
        for sentry in sentries:  # many sentry identities: the one heard longest ago goes
            assert await view.record(report(flagged=True, expires_ms=later), sentry)
        assert list(view.reports["w"]) == ["s2", "s3", "s4"]
        assert await view.record(report(flagged=False, expires_ms=later), "s2")  # heard anew
        assert list(view.reports["w"]) == ["s3", "s4", "s2"]
        clock.now = NOW + SWEEP_MS
        assert view.flag_of("gone") is None and view.flag_of("w") == 34, "live() as before"
        await view.record(report("x", flagged=False, expires_ms=later + 100_000), "s1")
        assert "gone" not in view.reports, "expired: dropped"
        assert list(view.reports["w"]) == ["s3", "s4", "s2"] and view.flag_of("w") == 34
        clock.now = later + SWEEP_MS
        await view.record(report("x", flagged=False, expires_ms=later + 100_001), "s1")
        assert set(view.reports) == {"x"}, "every report on w expired"


async def test_reports_of_peers_no_longer_known_as_sentries_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qos_view, "REPORTS_PER_WORKER", 2)
    async with await Database.open(tmp_path / "node.sqlite") as db:
        known = ["s1", "gone"]
        view = QosView(Clock(), VerifyStore(db), lambda: known)  # type: ignore[arg-type]
        assert await view.record(report(flagged=True, expires_ms=NOW + 200_000), "s1")
        assert await view.record(report(flagged=True, expires_ms=NOW + 200_000), "gone")
        known[1] = "s2"  # "gone" left the network
        assert await view.record(report(flagged=True, expires_ms=NOW + 200_000), "s2")
        assert list(view.reports["w"]) == ["s1", "s2"], "a known sentry's report was pushed out"
