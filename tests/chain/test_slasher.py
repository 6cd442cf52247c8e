"""Failing verdicts signed for slashing become one ``slash`` on a real EVM, sent by the
lowest-addressed signer once the contract's quorum of sentries signed the same case."""

from __future__ import annotations

import trio

from consensus.envelope import new_nonce
from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from node.chain.backend import Chain
from node.chain.signing import sign_slash
from node.chain.slasher import Slasher
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
