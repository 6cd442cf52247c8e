"""Proof-of-compute's tables on a real sqlite file: verdicts once per sentry, the settlement
question "did this attempt fail?", reputation slow up and fast down, attestations kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio

from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from consensus.verify.verdicts import REP_START
from node.verify.store import VerifyStore
from storage.db import Database

REF = TaskRef(job_id=b"j" * 16, task=2, attempt=0)
PASS = Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker="w", attestation=b"a" * 32,
               passed=True, sampled=[3], seed=b"s" * 32, evidence=b"e" * 32)  # fmt: skip
FAIL = replace(PASS, passed=False, reason="segment 3: replay gives 0x12...")


async def test_verdicts_reputation_and_the_settlement_question(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = VerifyStore(db)
        assert not await store.failed(REF)
        assert await store.reputation("w") == REP_START
        assert await store.add_verdict(b"a" * 32, "s1", PASS, b"raw", evidence=None, now_ms=1)
        assert not await store.add_verdict(b"a" * 32, "s1", FAIL, b"raw", evidence=None, now_ms=2)
        up = await store.reputation("w")
        assert REP_START < up < REP_START + 10_000, "slow up"
        assert not await store.failed(REF), "a sentry cannot flip its verdict"
        assert await store.add_verdict(b"a" * 32, "s2", FAIL, b"raw", evidence=b"ev", now_ms=3)
        assert await store.failed(REF)
        assert not await store.failed(replace(REF, attempt=1))
        assert await store.reputation("w") == up // 2, "fast down"
        assert [v["passed"] for v in await store.verdicts(REF)] == [1, 0]


async def test_attestations_are_kept_for_challenges(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = VerifyStore(db)
        segments = [(b"h" * 32, b"b" * 32), (b"i" * 32, b"c" * 32)]
        await store.keep_attestation(REF, b"att", segments, 5)
        assert await store.attested(REF) == (b"att", segments, [[], []])
        assert await store.attested(replace(REF, task=3)) is None
        # A resumed run keeps its resume checkpoint first, with no points of its own.
        points = [[b"p" * 32, b"q" * 32]]
        await store.keep_attestation(replace(REF, task=4), b"att", segments, 5, points)
        assert await store.attested(replace(REF, task=4)) == (b"att", segments, [[], points[0]])


async def test_concurrent_verdicts_move_reputation_once_each(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = VerifyStore(db)
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(
                    lambda i=i: store.add_verdict(
                        bytes([i]) * 32, "s", FAIL, b"r", evidence=None, now_ms=i
                    )
                )
        assert await store.reputation("w") == REP_START // 16
