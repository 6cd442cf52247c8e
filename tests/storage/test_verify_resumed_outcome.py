"""The requester's check of a resumed attempt, on a real sqlite file: its attestation must
start from the checkpoint the requester held from an earlier attempt, and only verdicts on
that attestation count."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from consensus.market.messages import Checkpoint
from consensus.verify import tree
from consensus.verify.messages import Attestation, Verdict, attestation_id
from node.market.store import MarketStore
from node.verify.requester import Verdicts
from node.verify.sentry import task_key
from node.verify.store import VerifyStore
from storage.db import Database
from tests.unit.verify.factories import REF, honest

RESUMED = replace(REF, attempt=1)


def resumed_attestation(first: int) -> Attestation:
    run = honest(4)
    start = run.leaves()[first - 1]
    leaves = tree.chain_leaves(run.hashes[first:], start.chained, first)
    return run.attestation(ref=RESUMED, root=tree.root(leaves, first), first=first, start=start)


async def judged(
    db: Database, att: Attestation, verdict_on: bytes, passed: bool = True
) -> tuple[str, str, bool]:
    """The requester's outcome with one verdict on ``verdict_on`` recorded."""
    store = VerifyStore(db)
    verdict = Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=RESUMED, worker="w",
                      attestation=verdict_on, passed=passed, sampled=[3], seed=b"s" * 32,
                      evidence=b"e" * 32)  # fmt: skip
    await store.add_verdict(verdict_on, "sentry", verdict, b"raw", evidence=None, now_ms=1)
    clock = SimpleNamespace(now_ms=lambda: 0)  # outcome() reads only the time from its net
    verdicts = Verdicts(clock, store, 1, lambda: True)  # type: ignore[arg-type]
    verdicts.attested[task_key(RESUMED)] = (attestation_id(att), att)
    outcome, why = await verdicts.outcome(RESUMED, timeout_ms=0)
    return outcome, why, verdicts.excluded(RESUMED, "w")


async def hold(db: Database, segment: int, attempt: int = 0, held: bool = True) -> None:
    leaf = honest(4).leaves()[segment]
    await MarketStore(db).add_checkpoint(replace(REF, attempt=attempt), segment, hash_=leaf.hash,
                                         chained=leaf.chained, seconds=5, held=held)  # fmt: skip


async def test_a_continuation_of_the_handed_over_checkpoint_is_verified(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await hold(db, 1)
        att = resumed_attestation(2)
        assert await VerifyStore(db).handed_over(RESUMED, 1) == Checkpoint(
            index=1,
            hash=att.start.hash,
            chained=att.start.chained,
            seconds=5,  # type: ignore[union-attr]
        )
        assert await judged(db, att, attestation_id(att)) == (
            "verified",
            "verified by 1 sentries",
            False,
        )


async def test_a_verdict_on_another_attestation_does_not_count(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await hold(db, 1)
        outcome, why, _ = await judged(db, resumed_attestation(2), b"x" * 32)
        assert (outcome, why) == ("unverified", "no verdict within 0 ms")


async def test_a_fail_on_any_attestation_of_the_attempt_rejects_it(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await hold(db, 1)
        outcome, _, _ = await judged(db, resumed_attestation(2), b"x" * 32, passed=False)
        assert outcome == "rejected"


async def test_another_start_than_the_handed_over_checkpoint_is_rejected(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await hold(db, 1)
        att = resumed_attestation(2)
        forged = replace(att, start=replace(att.start, hash=b"f" * 32))  # type: ignore[type-var]
        outcome, why, excluded = await judged(db, forged, attestation_id(forged))
        assert outcome == "rejected" and "attestation.start.hash" in why, why
        assert excluded, "the task is not offered to that worker again"


async def test_a_start_the_requester_never_held_is_rejected(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        await hold(db, 1, held=False)  # reported, its file never fetched: never handed over
        await hold(db, 2, attempt=1)  # the resumed attempt's own: not an earlier one
        for first in (2, 3):
            outcome, why, _ = await judged(db, resumed_attestation(first), b"a" * 32)
            assert outcome == "rejected" and "never handed over" in why, why
