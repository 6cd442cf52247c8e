"""Failing verdicts signed for slashing become one ``slash`` on a real EVM, sent by the
lowest-addressed signer once the contract's quorum of sentries signed the same case."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nacl.signing
import trio

from consensus.envelope import new_nonce, seal_body
from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from node.chain.backend import Chain
from node.chain.signing import sign_slash
from node.chain.slasher import Slasher
from node.verify.store import VerifyStore
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_settlement_node import StubNet, node_of

REF = TaskRef(job_id=b"\x07" * 16, task=0, attempt=0)
ATTESTATION = b"\xaa" * 32
AMOUNT = ETH // 10


def failing(net: Net, sentry: str, domain: object, amount: int = AMOUNT) -> Verdict:
    worker = bytes.fromhex(net.addr("worker")[2:])
    sig = sign_slash(net.keys[sentry], domain, worker, amount, ATTESTATION)  # type: ignore[arg-type]
    return Verdict(
        expires_ms=2**40, nonce=new_nonce(), ref=REF, worker="12D3worker", attestation=ATTESTATION,
        passed=False, sampled=[0], seed=b"\x01" * 32, evidence=b"\x02" * 32, reason="replay",
        worker_address=worker, slash_wei=amount, slash_sig=sig,
    )  # fmt: skip


async def slashers(net: Net) -> list[tuple[str, Slasher]]:
    """A slasher per staked sentry, the lowest address first."""
    out = []
    for who in ("sentry1", "sentry2"):
        client = net.client(who)
        client.stake(ETH)
        slasher = Slasher(node_of(net, who, client), StubNet(), "verdicts")  # type: ignore[arg-type]
        await slasher.chain.service.start()
        slasher.quorum, slasher.min_stake = 2, ETH  # the contract's (conftest.py PARAMS)
        out.append((who, slasher))
    return sorted(out, key=lambda pair: pair[1].chain.address.lower())


async def test_a_quorum_of_failing_verdicts_slashes_the_worker_once() -> None:
    net = make_net(Chain.embedded())
    worker = net.client("worker")
    worker.stake(ETH)
    (low, lowest), (high, other) = await slashers(net)
    domain = lowest.chain.domain
    mine, theirs = failing(net, low, domain), failing(net, high, domain)
    before = net.client(high).balance()
    with trio.fail_after(30):
        assert not await lowest.on_failing(mine), "one signature is no quorum"
        assert not await other.on_failing(mine)
        assert not await other.on_failing(theirs), "a quorum, but not its turn"
        assert await lowest.on_failing(theirs), "the lowest signer sends it"
        assert not await lowest.on_failing(theirs), "once"
    assert worker.stake_of()["bonded"] == ETH - AMOUNT
    # half burned (slash_burn_bps 5000), the rest split between the two signers; the other
    # sentry paid no gas, so its balance shows its share exactly
    assert net.client(high).balance() - before == AMOUNT // 4


async def test_a_signature_for_another_case_or_by_a_stranger_does_not_make_a_quorum() -> None:
    net = make_net(Chain.embedded())
    net.client("worker").stake(ETH)
    (low, lowest), (high, _) = await slashers(net)
    domain = lowest.chain.domain
    with trio.fail_after(30):
        assert not await lowest.on_failing(failing(net, low, domain, amount=AMOUNT + 1))
        assert not await lowest.on_failing(failing(net, high, domain))  # another amount
        assert not await lowest.on_failing(failing(net, "other", domain, amount=AMOUNT + 1))
    assert [len(s) for s in lowest.cases.values()] == [1, 1], "a stranger takes no seat"
    assert net.client("worker").stake_of()["bonded"] == ETH


async def test_a_sentry_restarted_between_two_verdicts_completes_the_case_from_sqlite(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    worker = net.client("worker")
    worker.stake(ETH)
    (low, lowest), (high, _) = await slashers(net)
    domain = lowest.chain.domain
    now = lowest.net.now_ms()
    mine = replace(failing(net, low, domain), expires_ms=now + 60_000)
    async with await Database.open(tmp_path / "node.db") as db:
        store = VerifyStore(db)
        sealed = seal_body(nacl.signing.SigningKey.generate(), mine)
        await store.add_verdict(ATTESTATION, "me", mine, sealed, evidence=None, now_ms=now)
        await lowest.on_failing(mine)  # then kill -9: the case in memory is gone
        restarted = Slasher(lowest.chain, StubNet(), "verdicts",  # type: ignore[arg-type]
                            lambda: store.failing_verdicts(now - 1000))  # fmt: skip
        restarted.quorum, restarted.min_stake = 2, ETH
        with trio.fail_after(30):
            await restarted.resume()
            assert await restarted.on_failing(failing(net, high, domain)), "a quorum again"
    assert worker.stake_of()["bonded"] == ETH - AMOUNT
