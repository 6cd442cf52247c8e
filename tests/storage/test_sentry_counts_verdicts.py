"""What a sentry (as settlement's judge of whether to pay a task) makes of others' verdicts,
on a real sqlite file: anyone can gossip one, and a pass would end the hold on a task's pay
while a fail would hold it for good. Only a known sentry's verdict counts (with chain
settlement, a peer that says it is a sentry and is in the staked set), never the judged
worker's own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from config.schema import VerifySettings
from consensus.verify.messages import Verdict
from node.peerbook import PeerBook
from node.verify.devices import ReplayDevices
from node.verify.sentry import Sentry
from node.verify.service import known_sentries
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


def settling_node(claiming: list[str], staked: set[str]) -> Any:
    """A sentry "me" that settles on chain: ``claiming`` say "sentry" in their hellos,
    ``staked`` is what node.chain.sentry_set found staked as sentries."""
    book = PeerBook("me")
    for peer in claiming:
        book.heard(peer, [], ["sentry"], "v", 1)
    book.heard("stranger", [], ["worker"], "v", 1)  # staked, but says no sentry role
    roles = SimpleNamespace(node=SimpleNamespace(roles=("sentry",)))
    return SimpleNamespace(network=SimpleNamespace(book=book, staked_sentries=staked),
                           keys=SimpleNamespace(peer_id="me"), settings=roles)  # fmt: skip


async def test_only_a_known_staked_sentrys_verdict_moves_a_tasks_pay(tmp_path: Path) -> None:
    clock = SimpleNamespace(peer_id="me", now_ms=lambda: 1_000)
    # the worker is a staked sentry too, but never judges itself; "unstaked" only says it is one
    ctx = settling_node(["sentry", "unstaked", WORKER], {"me", "sentry", "stranger", WORKER})
    async with await Database.open(tmp_path / "node.sqlite") as db:
        sentry = Sentry(clock, VerifyStore(db), None, VerifySettings(), {},  # type: ignore[arg-type]
                        lambda: known_sentries(ctx), ReplayDevices({}, ""),
                        tmp_path / "scratch")  # fmt: skip
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
