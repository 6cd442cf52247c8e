"""Sentries' QoS reports as a requester keeps them, on a real sqlite file: only known
sentries count, an older report never replaces a newer one, the quorum decides, and a flag
outlives a restart until its report expires."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from consensus.verify.qos import Answered, WorkerQos
from node.verify.qos_view import QosView
from node.verify.store import VerifyStore
from storage.db import Database

NOW = 1_000_000


def report(worker: str = "w", *, flagged: bool, expires_ms: int = NOW + 60_000):  # type: ignore[no-untyped-def]
    record = WorkerQos()
    for _ in range(2):  # 4096 in 400 ms: score 34, so a claim of 100 is flagged
        record.add(Answered(size=4096, elapsed_ms=400, latency_ms=2, proof_ok=True))
    return record.report(worker, 100 if flagged else 40, expires_ms, b"n" * 16)


def view(db: Database, sentries: list[str], quorum: int = 1, now: int = NOW) -> QosView:
    net = SimpleNamespace(now_ms=lambda: now)
    return QosView(net, VerifyStore(db), lambda: sentries, quorum)  # type: ignore[arg-type]


async def test_known_sentries_flag_and_newer_reports_win(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "node.db")
    try:
        v = view(db, ["s1", "s2"])
        assert not await v.record(report(flagged=True), "stranger")
        assert v.flag_of("w") is None
        assert await v.record(report(flagged=True, expires_ms=NOW + 5000), "s1")
        assert v.flag_of("w") == 34
        assert not await v.record(report(flagged=False, expires_ms=NOW + 4000), "s1")  # late
        assert v.flag_of("w") == 34
        assert await v.record(report(flagged=False, expires_ms=NOW + 6000), "s1")
        assert v.flag_of("w") is None
        shown = v.view("w")
        assert shown is not None and not shown["flagged"] and shown["measured"] == 34
        assert v.view("nobody") is None
    finally:
        await db.close()


async def test_a_quorum_of_sentries_must_flag(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "node.db")
    try:
        v = view(db, ["s1", "s2"], quorum=2)
        await v.record(report(flagged=True), "s1")
        await v.record(report(flagged=False), "s2")
        assert v.flag_of("w") is None
        await v.record(report(flagged=True, expires_ms=NOW + 70_000), "s2")
        assert v.flag_of("w") == 34
        v.sentries = lambda: ["s1"]  # s2 no longer known: its word no longer counts
        assert v.flag_of("w") is None
    finally:
        await db.close()


async def test_a_flag_outlives_a_restart_until_it_expires(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "node.db")
    v = view(db, ["s1"])
    await v.record(report("w1", flagged=True, expires_ms=NOW + 60_000), "s1")
    await v.record(report("w2", flagged=True, expires_ms=NOW + 1_000), "s1")
    await db.close()
    db = await Database.open(tmp_path / "node.db")
    try:
        later = view(db, ["s1"], now=NOW + 2_000)
        await later.load()
        assert later.flag_of("w1") == 34
        assert later.flag_of("w2") is None  # expired while we were down
        assert set(later.reports) == {"w1"}
    finally:
        await db.close()
