"""The settlement contract on a real EVM (embedded, and anvil): every path, every revert."""

from __future__ import annotations

from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import Web3

from consensus.settlement.eip712 import (
    ChainVoucher,
    Domain,
    chain_task_id,
    spend_digest,
    split_fee,
    voucher_digest,
)
from node.chain import artifacts
from node.chain.backend import Chain, DeployParams
from node.chain.client import Settlement
from node.chain.errors import ChainReverted
from node.chain.signing import sign_slash, sign_voucher
from tests.chain.conftest import ALSO_TOKEN, ETH, Anvil, Net, make_net

JOB = b"job-0001".ljust(32, b"\0")
TASK = chain_task_id(0, 0)
BURN = "0x000000000000000000000000000000000000dEaD"


def voucher(net: Net, cumulative: int, *, signer: str = "requester", worker: str = "worker",
            task: bytes = TASK, domain: Domain | None = None) -> bytes:  # fmt: skip
    v = ChainVoucher(JOB, task, bytes.fromhex(net.addr(worker)[2:]), cumulative)
    return sign_voucher(net.keys[signer], domain or net.client(signer).domain, v)


def deposit(net: Net, value: int = 10 * ETH, cap: int = 20 * ETH, ttl: int = 86400) -> Settlement:
    req = net.client("requester")
    req.deposit(JOB, value, cap, net.chain.now() + ttl)
    return req


def reverts(error: str) -> Any:
    return pytest.raises(ChainReverted, match=rf"reverted: {error}\(")


@ALSO_TOKEN
def test_deposit_creates_the_job_and_tops_up_to_the_cap(net: Net) -> None:
    req = deposit(net)
    job = req.job(JOB)
    assert job["requester"] == net.addr("requester")
    assert (job["cap"], job["deposited"], job["balance"]) == (20 * ETH, 10 * ETH, 10 * ETH)
    assert job["unlock_at"] == job["deadline"] + 3600
    req.deposit(JOB, 10 * ETH, 0, 0)  # a top-up: cap and deadline already fixed
    assert req.job(JOB)["balance"] == 20 * ETH
    assert net.balance(net.address) == 20 * ETH
    with reverts("OverCap"):
        req.deposit(JOB, 1, 0, 0)
    with reverts("NotRequester"):
        net.client("other").deposit(JOB, ETH, 0, 0)
    with reverts("ZeroAmount"):
        req.deposit(JOB, 0, 0, 0)
    with reverts("DeadlineInPast"):
        req.deposit(b"\2" * 32, ETH, ETH, net.chain.now() - 1)


@ALSO_TOKEN
def test_claims_pay_only_the_increase_minus_the_fee(net: Net) -> None:
    deposit(net)
    worker = net.client("worker")
    before = worker.balance()
    r1 = worker.claim(JOB, TASK, net.addr("worker"), 3 * ETH, voucher(net, 3 * ETH))
    r2 = worker.claim(JOB, TASK, net.addr("worker"), 5 * ETH, voucher(net, 5 * ETH))
    gas_cost = sum(net.gas_cost(r.tx_hash) for r in (r1, r2))
    paid, fee = split_fee(5 * ETH, 100)
    assert worker.balance() == before + paid - gas_cost
    assert worker.fees_accrued() == fee == 5 * ETH // 100
    assert worker.claimed_of(JOB, TASK, net.addr("worker")) == 5 * ETH
    assert worker.job(JOB)["balance"] == 5 * ETH
    # anyone may submit a worker's voucher; the money still goes to the worker
    w_before = worker.balance()
    net.client("other").claim(JOB, TASK, net.addr("worker"), 6 * ETH, voucher(net, 6 * ETH))
    assert worker.balance() == w_before + split_fee(ETH, 100)[0]


def test_forged_replayed_and_over_budget_vouchers_are_refused(net: Net) -> None:
    deposit(net)
    worker = net.client("worker")
    me = net.addr("worker")
    with reverts("BadSignature"):  # signed by someone other than the requester
        worker.claim(JOB, TASK, me, ETH, voucher(net, ETH, signer="other"))
    with reverts("BadSignature"):  # a valid voucher for 1 ETH, presented as 2 ETH
        worker.claim(JOB, TASK, me, 2 * ETH, voucher(net, ETH))
    with reverts("BadSignature"):  # for another worker
        worker.claim(JOB, TASK, me, ETH, voucher(net, ETH, worker="worker2"))
    other_chain = Domain(net.chain.chain_id + 1, bytes.fromhex(net.address[2:]))
    with reverts("BadSignature"):  # for another chain
        worker.claim(JOB, TASK, me, ETH, voucher(net, ETH, domain=other_chain))
    other_contract = Domain(net.chain.chain_id, b"\x11" * 20)
    with reverts("BadSignature"):  # for another deployment
        worker.claim(JOB, TASK, me, ETH, voucher(net, ETH, domain=other_contract))
    sig = voucher(net, 2 * ETH)
    worker.claim(JOB, TASK, me, 2 * ETH, sig)
    with reverts("NothingToClaim"):  # replayed
        worker.claim(JOB, TASK, me, 2 * ETH, sig)
    with reverts("NothingToClaim"):  # an older, smaller voucher
        worker.claim(JOB, TASK, me, ETH, voucher(net, ETH))
    with reverts("OverBudget"):  # 2 + 9 > 10 escrowed
        worker.claim(JOB, TASK, me, 11 * ETH, voucher(net, 11 * ETH))
    with reverts("UnknownJob"):
        worker.claim(b"\3" * 32, TASK, me, ETH, voucher(net, ETH))
    # each task attempt is its own cumulative line in the same escrow
    worker.claim(JOB, chain_task_id(0, 1), me, ETH, voucher(net, ETH, task=chain_task_id(0, 1)))
    assert worker.job(JOB)["balance"] == 7 * ETH


@ALSO_TOKEN
def test_stale_claims_and_the_requester_withdrawing_the_rest(net: Net) -> None:
    req = deposit(net, ttl=600)
    worker = net.client("worker")
    me = net.addr("worker")
    worker.claim(JOB, TASK, me, 4 * ETH, voucher(net, 4 * ETH))
    with reverts("StillLocked"):
        req.withdraw(JOB)
    with reverts("NotRequester"):
        net.client("other").end_job(JOB)
    req.end_job(JOB)  # the window now closes claim_grace after this, not after the deadline
    unlock = req.job(JOB)["unlock_at"]
    assert unlock <= net.chain.now() + 3600
    net.chain.advance(3601)
    with reverts("ClaimWindowClosed"):
        worker.claim(JOB, TASK, me, 5 * ETH, voucher(net, 5 * ETH))
    before = req.balance()
    r = req.withdraw(JOB)
    assert req.balance() == before + 6 * ETH - net.gas_cost(r.tx_hash)
    assert req.job(JOB)["closed"] and req.job(JOB)["balance"] == 0
    with reverts("JobClosed"):
        req.withdraw(JOB)
    with reverts("JobClosed"):
        worker.claim(JOB, TASK, me, 5 * ETH, voucher(net, 5 * ETH))
    with reverts("JobClosed"):
        req.deposit(JOB, ETH, 0, 0)


@ALSO_TOKEN
def test_stake_unbonds_after_the_delay(net: Net) -> None:
    w = net.client("worker")
    w.stake(3 * ETH)
    with reverts("InsufficientStake"):
        w.request_unstake(4 * ETH)
    with reverts("ZeroAmount"):
        w.withdraw_stake()
    w.request_unstake(2 * ETH)
    assert w.stake_of() == {
        "bonded": ETH,
        "unbonding": 2 * ETH,
        "unbond_at": w.stake_of()["unbond_at"],
    }
    with reverts("NotUnbonded"):
        w.withdraw_stake()
    net.chain.advance(7 * 86400)
    before = w.balance()
    r = w.withdraw_stake()
    assert w.balance() == before + 2 * ETH - net.gas_cost(r.tx_hash)
    assert w.stake_of()["unbonding"] == 0


def _slash_sigs(
    net: Net, sentries: list[str], amount: int, evidence: bytes, target: str = "worker"
) -> list[bytes]:
    worker = bytes.fromhex(net.addr(target)[2:])
    domain = net.client("worker").domain
    ordered = sorted(sentries, key=lambda s: int(net.addr(s), 16))
    return [sign_slash(net.keys[s], domain, worker, amount, evidence) for s in ordered]


@ALSO_TOKEN
def test_slashing_with_a_sentry_quorum_burns_and_pays_the_sentries(net: Net) -> None:
    w = net.client("worker")
    w.stake(4 * ETH)
    w.request_unstake(ETH)  # unbonding stake is still slashable
    for s in ("sentry1", "sentry2"):
        net.client(s).stake(ETH)
    net.client("sentry3").stake(ETH // 2)  # below the sentry minimum
    evidence = Web3.keccak(text="wrong result, task 0")
    sigs = _slash_sigs(net, ["sentry1", "sentry2"], 5 * ETH, evidence)
    s1, s2 = net.client("sentry1"), net.client("sentry2")
    b1, b2, burn0 = s1.balance(), s2.balance(), net.balance(BURN)
    r = net.client("other").slash(net.addr("worker"), 5 * ETH, evidence, sigs)
    assert w.stake_of()["bonded"] == 0 and w.stake_of()["unbonding"] == 0  # 4 of 5 taken
    assert net.balance(BURN) - burn0 == 2 * ETH
    assert (s1.balance() - b1, s2.balance() - b2) == (ETH, ETH)
    assert r.gas > 0
    with reverts("EvidenceUsed"):
        net.client("other").slash(net.addr("worker"), 5 * ETH, evidence, sigs)


def test_slashing_refuses_a_weak_quorum(net: Net) -> None:
    net.client("worker").stake(4 * ETH)
    for s in ("sentry1", "sentry2"):
        net.client(s).stake(ETH)
    net.client("sentry3").stake(ETH // 2)
    ev = Web3.keccak(text="evidence")
    other = net.client("other")
    worker = net.addr("worker")
    with reverts("BadQuorum"):
        other.slash(worker, ETH, ev, _slash_sigs(net, ["sentry1"], ETH, ev))
    with reverts("NotSentry"):
        other.slash(worker, ETH, ev, _slash_sigs(net, ["sentry1", "sentry3"], ETH, ev))
    with reverts("SignersNotSorted"):
        other.slash(
            worker, ETH, ev, list(reversed(_slash_sigs(net, ["sentry1", "sentry2"], ETH, ev)))
        )
    with reverts("SignersNotSorted"):  # the same sentry twice
        sig = _slash_sigs(net, ["sentry1"], ETH, ev)
        other.slash(worker, ETH, ev, sig + sig)
    with reverts("NotSentry|SignersNotSorted"):  # signed for another amount: recovers garbage
        other.slash(worker, 2 * ETH, ev, _slash_sigs(net, ["sentry1", "sentry2"], ETH, ev))
    with reverts("InsufficientStake"):  # worker2 never staked
        other.slash(
            net.addr("worker2"),
            ETH,
            ev,
            _slash_sigs(net, ["sentry1", "sentry2"], ETH, ev, "worker2"),
        )


@ALSO_TOKEN
def test_fees_go_to_the_treasury_only(net: Net) -> None:
    deposit(net)
    net.client("worker").claim(JOB, TASK, net.addr("worker"), 10 * ETH, voucher(net, 10 * ETH))
    with reverts("NotTreasury"):
        net.client("other").send("withdrawFees", [])
    t = net.client("treasury")
    before = t.balance()
    r = t.send("withdrawFees", [])
    assert t.balance() == before + ETH // 10 - net.gas_cost(r.tx_hash)
    assert t.fees_accrued() == 0


def test_python_digest_matches_the_contract(net: Net) -> None:
    c = net.client("worker")
    v = ChainVoucher(JOB, TASK, bytes.fromhex(net.addr("worker")[2:]), 12345)
    on_chain = c.contract.functions.voucherDigest(JOB, TASK, net.addr("worker"), 12345).call()
    assert bytes(on_chain) == voucher_digest(c.domain, v)
    spend = c.contract.functions.spendDigest(net.addr("requester"), 10**30).call()
    assert bytes(spend) == spend_digest(c.domain, bytes.fromhex(net.addr("requester")[2:]), 10**30)


def test_coin_must_come_as_exactly_the_amount() -> None:
    net = make_net(Chain.embedded())
    req, deadline = net.client("requester"), net.chain.now() + 600
    with reverts("ValueMismatch"):
        req.send("deposit", [JOB, ETH, deadline, ETH], ETH - 1)
    with reverts("ValueMismatch"):  # coin sent with no amount named
        req.send("fund", [0], 1)
    with reverts("ValueMismatch"):
        req.send("stake", [ETH], 2 * ETH)
    with pytest.raises(ValueError, match="no token"):
        req.send("approve", [net.address, ETH])
    assert req.params()["token"] is None and req.balance() == net.chain.balance(req.address)


def test_a_token_deployment_pulls_the_amount_and_refuses_coin() -> None:
    net = make_net(Chain.embedded(), token=True)
    req, deadline = net.client("requester"), net.chain.now() + 600
    assert req.params()["token"] == net.token
    with reverts("CoinNotAccepted"):
        req.send("deposit", [JOB, ETH, deadline, ETH], ETH)
    with reverts("CoinNotAccepted"):
        req.send("fund", [0], 1)
    with reverts("ERC20InsufficientAllowance"):  # the contract may not pull without approve
        req.send("deposit", [JOB, ETH, deadline, ETH])
    with reverts("ERC20InsufficientAllowance"):
        req.send("stake", [ETH])
    req.send("approve", [net.address, 2 * ETH])
    with reverts("ERC20InsufficientAllowance"):  # more than approved
        req.send("fund", [3 * ETH])
    poor = net.client("other")
    held = poor.balance()
    poor.send("approve", [net.address, held + 1])
    with reverts("ERC20InsufficientBalance"):
        poor.send("fund", [held + 1])
    coin = req.gas_balance()
    r = req.deposit(JOB, ETH, 2 * ETH, deadline)  # approves exactly ETH, then deposits
    assert req.allowance() == 0 and net.balance(net.address) == ETH
    assert req.gas_balance() < coin and r.op == "deposit"  # gas, in coin; the escrow, in token
    assert req.balance() == 1000 * ETH - ETH
    with pytest.raises(TransactionFailed, match="token"):  # no contract at that address
        net.chain.deploy(artifacts.load(), DeployParams(token="0x" + "11" * 20))


def test_a_token_deposit_and_claim_on_anvil(anvil: Anvil) -> None:
    net = make_net(Chain.rpc(anvil.url, 31337), token=True)
    deposit(net, value=3 * ETH)
    worker = net.client("worker")
    before, coin = worker.balance(), worker.gas_balance()
    worker.claim(JOB, TASK, net.addr("worker"), 2 * ETH, voucher(net, 2 * ETH))
    assert worker.balance() == before + split_fee(2 * ETH, 100)[0]  # to the wei, no gas in it
    assert worker.gas_balance() < coin
    assert net.balance(net.address) == ETH + split_fee(2 * ETH, 100)[1]
