"""What a sentry (as settlement's judge of whether to pay a task) makes of others' verdicts,
on a real sqlite file: anyone can gossip one, and a pass would end the hold on a task's pay
while a fail would hold it for good. Only a known sentry's verdict counts, never the judged
worker's own, and with chain settlement only a staked sentry's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from config.schema import VerifySettings
from consensus.verify.messages import Verdict
from node.verify.devices import ReplayDevices
from node.verify.sentry import Sentry
from node.verify.store import VerifyStore
from storage.db import Database
from tests.unit.verify.factories import REF, honest

WORKER = "worker"
ATT = honest(2).attestation(worker=WORKER)


def verdict(passed: bool) -> Verdict:
    return Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker=WORKER,
                   attestation=b"a" * 32, passed=passed, sampled=[1], seed=b"s" * 32,
                   evidence=b"e" * 32)  # fmt: skip


class Inbox:
    """Gossip as the sentry's verdict follower reads it: (origin, verdict) in order."""

    def __init__(self, heard: list[tuple[str, Verdict]]) -> None:
        self.heard = heard

    async def __aiter__(self) -> Any:
        for origin, body in self.heard:
            yield SimpleNamespace(origin=origin, opened=SimpleNamespace(body=body, raw=b"raw"))


async def test_only_a_known_staked_sentrys_verdict_moves_a_tasks_pay(tmp_path: Path) -> None:
    clock = SimpleNamespace(peer_id="me", now_ms=lambda: 1_000)
    async with await Database.open(tmp_path / "node.sqlite") as db:
        sentry = Sentry(clock, VerifyStore(db), None, VerifySettings(), {},  # type: ignore[arg-type]
                        lambda: ["me", "sentry", "unstaked", WORKER],
                        ReplayDevices({}, ""), tmp_path / "scratch")  # fmt: skip

        async def staked(peer: str, _verdict: Verdict) -> str:
            return "its sentry's stake 0 wei is below the 1 wei a sentry needs" * (
                peer == "unstaked"
            )

        sentry.verdict_check = staked
        sentry.heard(ATT)  # attested: settlement holds its pay for a verdict
        strangers = [(WORKER, verdict(True)), ("stranger", verdict(True)),
                     ("unstaked", verdict(True)), ("stranger", verdict(False)),
                     ("unstaked", verdict(False))]  # fmt: skip
        await sentry._follow_verdicts(Inbox(strangers))
        assert await sentry.holds(REF), "no pass of theirs ends the hold"
        await sentry._follow_verdicts(Inbox([("sentry", verdict(True))]))
        assert not await sentry.holds(REF), "a known, staked sentry's pass does"
        await sentry._follow_verdicts(Inbox([("sentry", verdict(False))]))
        assert not await sentry.holds(REF), "its first verdict stands; strangers' fails none"
