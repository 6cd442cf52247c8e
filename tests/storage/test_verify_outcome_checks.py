"""The requester's checks on verdicts it is given, on a real sqlite file.

A requester that asked its bidders for stake accepts a verdict only on an attestation that
names the staked account the worker bid with, with a binding sentries can slash: otherwise a
worker could bid on its stake and attest (and be slashed) as an empty account. A pass on a
job the sentry found not deterministic is accepted (paid, unchecked), never "verified". And
only known sentries' verdicts count (with chain settlement, peers that say they are sentries
and are in the staked set), asked when counted, never the worker's own (anyone can gossip a
verdict)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from consensus.verify.messages import Attestation, Verdict, attestation_id
from node.identity import NodeKeys, wallet_binding
from node.peerbook import PeerBook
from node.verify.requester import Verdicts
from node.verify.sentry import task_key
from node.verify.service import known_sentries
from node.verify.store import VerifyStore
from storage.db import Database
from tests.unit.verify.factories import REF, honest

WORKER, OTHER = NodeKeys.generate(), NodeKeys.generate()


def attested(keys: NodeKeys, binding_of: NodeKeys | None = None) -> Attestation:
    """WORKER's attestation naming ``keys``'s account, bound by ``binding_of``'s wallet."""
    binder = NodeKeys(WORKER.signing_key, (binding_of or keys).wallet_key)
    return honest(3).attestation(worker=WORKER.peer_id, chain_address=bytes.fromhex(
        keys.address[2:]), binding_sig=wallet_binding(binder))  # fmt: skip


async def judged(
    db: Database, att: Attestation, staked: str | None, reason: str = ""
) -> tuple[str, str]:
    store = VerifyStore(db)
    verdict = Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker=WORKER.peer_id,
                      attestation=attestation_id(att), passed=True, sampled=[1],
                      seed=b"s" * 32, evidence=b"e" * 32, reason=reason)  # fmt: skip
    await store.add_verdict(attestation_id(att), "sentry", verdict, b"raw", evidence=None, now_ms=1)
    verdicts = Verdicts(SimpleNamespace(now_ms=lambda: 0), store, 1, lambda: True)  # type: ignore[arg-type]

    async def bid_with(peer: str) -> str | None:
        return staked if peer == WORKER.peer_id else None

    verdicts.staked_account = bid_with
    verdicts.attested[task_key(REF)] = (attestation_id(att), att)
    return await verdicts.outcome(REF, timeout_ms=0)


async def test_only_the_staked_account_bound_to_the_worker_is_verified(tmp_path: Path) -> None:
    staked = WORKER.address
    cases = [
        (attested(WORKER), staked, ("verified", "verified by 1 sentries")),
        (attested(WORKER), None, ("verified", "verified by 1 sentries")),  # bid no account
        (attested(OTHER, binding_of=WORKER), staked,
         ("rejected",
          f"attested with {OTHER.address.lower()}, not the staked {staked} it bid with")),
        (replace(attested(WORKER), chain_address=b"", binding_sig=b""), staked,
         ("rejected", f"attested with no chain account, not the staked {staked} it bid with")),
        (attested(WORKER, binding_of=OTHER), staked,
         ("rejected", f"attested with {staked} but no valid binding: sentries could not slash it")),
    ]  # fmt: skip
    for i, (att, bid_with, expected) in enumerate(cases):
        async with await Database.open(tmp_path / f"node{i}.sqlite") as db:
            assert await judged(db, att, bid_with) == expected, i


async def test_a_pass_on_a_job_that_is_not_deterministic_is_accepted_not_verified(
    tmp_path: Path,
) -> None:
    why = "unverifiable: the job is not deterministic (two replays of segment 1 differ)"
    async with await Database.open(tmp_path / "node.sqlite") as db:
        assert await judged(db, attested(WORKER), None, why) == ("accepted", f"{why} (sentry)")
    answered = f"same-class replay of escalated segments [1]: {why}"  # an escalation's answer
    async with await Database.open(tmp_path / "node2.sqlite") as db:
        outcome, said = await judged(db, attested(WORKER), None, answered)
        assert (outcome, said) == ("accepted", f"{answered} (sentry)")


def gossiped(passed: bool) -> Verdict:
    att = attested(WORKER)
    return Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker=WORKER.peer_id,
                   attestation=attestation_id(att), passed=passed, sampled=[1],
                   seed=b"s" * 32, evidence=b"e" * 32)  # fmt: skip


async def test_only_known_staked_sentries_verdicts_count(tmp_path: Path) -> None:
    book = PeerBook("me")
    for peer in ("unstaked", WORKER.peer_id):  # a worker may claim the sentry role too
        book.heard(peer, [], ["sentry"], "v", 1)
    staked = {WORKER.peer_id, "stranger"}  # what node.chain.sentry_set found staked
    roles = SimpleNamespace(node=SimpleNamespace(roles=("requester",)))
    ctx = SimpleNamespace(network=SimpleNamespace(book=book, staked_sentries=staked),
                          keys=SimpleNamespace(peer_id="me"), settings=roles)  # fmt: skip
    async with await Database.open(tmp_path / "node.sqlite") as db:
        verdicts = Verdicts(SimpleNamespace(now_ms=lambda: 0), VerifyStore(db), 1, lambda: True,
                            lambda peer: peer in known_sentries(ctx))  # type: ignore[arg-type]  # fmt: skip
        for sentry, passed in ((WORKER.peer_id, True), ("unstaked", True), ("stranger", False)):
            await verdicts._heard(gossiped(passed), sentry, b"raw")
        assert await verdicts.outcome(REF, timeout_ms=0) == ("unverified", "no verdict within 0 ms")
        assert not verdicts.excluded(REF, WORKER.peer_id), "nobody who counts failed it"
        staked.add("unstaked")  # its stake read later: its pass counts from then on
        assert await verdicts.outcome(REF, timeout_ms=0) == ("verified", "verified by 1 sentries")
        book.heard("stranger", [], ["sentry"], "v", 2)  # its role heard later: its fail counts
        outcome, _ = await verdicts.outcome(REF, timeout_ms=0)
        assert outcome == "rejected", "a known sentry's fail"
