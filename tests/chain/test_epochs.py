"""Epoch settlement end to end on a real EVM (embedded and anvil): a requester funds its pool,
two workers earn vouchers over several jobs, a forged epoch is disputed and voided, a correct
one passes its window, workers claim, the requester takes back the rest; all to the wei."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from consensus.settlement.eip712 import ChainVoucher, chain_task_id, split_fee
from consensus.settlement.epoch import Entry, Epoch, assemble
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree
from node.chain.client import Settlement
from node.chain.errors import ChainReverted
from node.chain.signing import sign_voucher
from node.cli_wallet import epoch_rows
from tests.chain.conftest import ALSO_TOKEN, ETH, Net

WINDOW = 3600
FEE = 100  # bps, as deployed by the fixture
BURN = "0x000000000000000000000000000000000000dEaD"
J1, J2, J3 = (bytes([i]) * 32 for i in (1, 2, 3))
T0, T1 = chain_task_id(0, 0), chain_task_id(1, 0)


def reverts(error: str) -> Any:
    return pytest.raises(ChainReverted, match=rf"reverted: {error}\(")


def refused(text: str) -> Any:
    """The revert, its error and every argument exactly (addresses in lower case)."""
    return pytest.raises(ChainReverted, match=re.escape(f"reverted: {text}"))


def b(net: Net, who: str) -> bytes:
    return bytes.fromhex(net.addr(who)[2:])


def with_earnings(epoch: Epoch, earnings: dict[bytes, int]) -> Epoch:
    """``epoch`` with other earnings leaves (the sorted tree over them): what a cheat posts."""
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(earnings.items())])
    return replace(epoch, earnings=earnings, earnings_tree=tree)


def entries(net: Net, amounts: dict[tuple[bytes, bytes, str], int]) -> list[Entry]:
    r = b(net, "requester")
    return [Entry(r, b(net, w), job, task, a) for (job, task, w), a in amounts.items()]


def voucher_sig(net: Net, e: Entry) -> bytes:
    v = ChainVoucher(e.job, e.task, e.worker, e.amount)
    return sign_voucher(net.keys["requester"], net.client("requester").domain, v)


def claim(net: Net, who: str, epoch: Epoch) -> int:
    """Claim ``who``'s earnings; return what its balance gained net of gas."""
    c = net.client(who)
    before = c.balance()
    r = c.claim_earnings(epoch.earnings[b(net, who)], epoch.earnings_proof(b(net, who)))
    return c.balance() - before + net.gas_cost(r.tx_hash)


@ALSO_TOKEN
def test_forged_epoch_voided_correct_epoch_claimed_rest_withdrawn(net: Net) -> None:
    req, honest, cheat = net.client("requester"), net.client("sentry2"), net.client("sentry1")
    req.fund(10 * ETH)
    cheat.stake(ETH)
    honest.stake(ETH)
    signed = {(J1, T0, "worker"): ETH, (J1, T1, "worker2"): ETH // 2,
              (J2, T0, "worker"): 2 * ETH, (J3, T0, "worker2"): 3 * ETH // 2}  # fmt: skip
    true = entries(net, signed)
    spend = net.spends(5 * ETH)  # what the requester signed in all
    # The cheat moves 1.5 ETH from worker's J2 line to worker2's J3 line: within the spend, so
    # only a dispute of the entry catches it.
    forged_lines = entries(net, {**signed, (J2, T0, "worker"): ETH // 2,
                                 (J3, T0, "worker2"): 3 * ETH})  # fmt: skip
    forged = assemble(forged_lines, {}, {}, FEE)
    cheat.post_anchor(forged, spend)
    assert req.pool_of()["balance"] == 10 * ETH - forged.total
    assert req.pool_of()["debited"] == 5 * ETH
    bad = forged_lines[-1]
    req.dispute(0, bad, forged.entry_proof(bad))
    with reverts("NotYourEntry"):  # the voucher it has is for 1.5 ETH, not 3
        cheat.answer(0, bad, voucher_sig(net, true[-1]))
    with reverts("PreviousPending"):
        honest.post_anchor(assemble(true, {}, {}, FEE), spend)
    net.chain.advance(2 * WINDOW)
    with reverts("DisputesOpen"):
        honest.finalize(0)
    req_before, burn_before = req.balance(), net.balance(BURN)
    with reverts("DebitsMismatch"):
        honest.void_anchor(0, bad, {b(net, "requester"): 1})
    honest.void_anchor(0, bad, forged.debits)
    assert req.anchor()["state"] == "void"
    assert req.pool_of()["balance"] == 10 * ETH  # every debit back
    assert req.pool_of()["debited"] == 0  # and no longer counted against the spend
    assert cheat.stake_of()["bonded"] == 0
    assert req.balance() - req_before == ETH // 2 and net.balance(BURN) - burn_before == ETH // 2

    good = assemble(true, {}, {}, FEE)
    honest.post_anchor(good, spend)
    with reverts("WindowOpen"):
        honest.finalize(1)
    net.chain.advance(WINDOW)
    honest.finalize(1)
    assert claim(net, "worker", good) == split_fee(3 * ETH, FEE)[0]  # the fee came off at finalize
    assert claim(net, "worker2", good) == split_fee(2 * ETH, FEE)[0]
    with reverts("NothingToClaimYet"):
        claim(net, "worker", good)

    # A second epoch: only the increases are debited, claimed and paid.
    more = entries(net, {(J2, T0, "worker"): 3 * ETH, (J3, T1, "worker2"): ETH})
    second = assemble(more, good.lines, good.earnings, FEE)
    assert second.debits == {b(net, "requester"): 2 * ETH}
    with reverts("SpendExceeded"):  # 5 + 2 ETH over the 5 ETH signed so far
        honest.post_anchor(second, spend)
    honest.post_anchor(second, net.spends(7 * ETH))
    net.chain.advance(WINDOW)
    honest.finalize(2)
    assert claim(net, "worker", second) == split_fee(ETH, FEE)[0]
    assert claim(net, "worker2", second) == split_fee(ETH, FEE)[0]

    req.leave_pool(3 * ETH)  # 10 funded - 5 - 2 anchored
    with reverts("PoolShort"):
        req.leave_pool(1)
    net.chain.advance(7 * 86400)
    before = req.balance()
    r = req.withdraw_pool()
    assert req.balance() - before + net.gas_cost(r.tx_hash) == 3 * ETH
    fees = 7 * ETH // 100
    assert req.fees_accrued() == fees
    assert net.balance(net.address) == fees + ETH  # the fees and the honest bond
    rows = epoch_rows(req)  # what `idlegrid settlement epochs` shows
    assert [(r["epoch"], r["state"], r["disputes"]) for r in rows] == [
        (0, "void", 1), (1, "final", 0), (2, "final", 0),
    ]  # fmt: skip
    assert rows[1]["earnings_root"] == "0x" + good.earnings_tree.root.hex()
    assert rows[2]["total_wei"] == str(2 * ETH)


def test_an_answered_dispute_lets_the_epoch_pass(net: Net) -> None:
    req, anchorer = net.client("requester"), net.client("sentry1")
    req.fund(5 * ETH)
    anchorer.stake(ETH)
    epoch = assemble(entries(net, {(J1, T0, "worker"): ETH, (J2, T0, "worker2"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(epoch, net.spends(2 * ETH))
    e = epoch.entries[0]
    with reverts("NotInTree"):
        req.dispute(0, e, epoch.entry_proof(epoch.entries[1]))
    with reverts("NotYourEntry"):
        net.client("other").dispute(0, e, epoch.entry_proof(e))
    req.dispute(0, e, epoch.entry_proof(e))
    with reverts("AlreadyDisputed"):
        req.dispute(0, e, epoch.entry_proof(e))
    with reverts("AnswerTimeNotOver"):
        req.void_anchor(0, e, epoch.debits)
    anchorer.answer(0, e, voucher_sig(net, e))
    with reverts("NoDispute"):
        req.void_anchor(0, e, epoch.debits)
    with reverts("AlreadyDisputed"):  # answered stays answered: it cannot be raised again
        req.dispute(0, e, epoch.entry_proof(e))
    with reverts("NoDispute"):
        anchorer.answer(0, e, voucher_sig(net, e))
    net.chain.advance(WINDOW)
    with reverts("WindowClosed"):
        req.dispute(0, epoch.entries[1], epoch.entry_proof(epoch.entries[1]))
    anchorer.finalize(0)
    assert req.anchor()["state"] == "final"
    assert claim(net, "worker", epoch) == split_fee(ETH, FEE)[0]


def test_anchors_the_pools_do_not_cover_are_refused(net: Net) -> None:
    req, anchorer = net.client("requester"), net.client("sentry1")
    epoch = assemble(entries(net, {(J1, T0, "worker"): 2 * ETH}), {}, {}, FEE)
    with reverts("NotAnchorer"):
        anchorer.post_anchor(epoch, net.spends(2 * ETH))
    anchorer.stake(ETH)
    req.fund(ETH)
    with reverts("PoolShort"):
        anchorer.post_anchor(epoch, net.spends(2 * ETH))
    # A root whose leaves promise more than the debits: claims stop at what was debited.
    liar = assemble(entries(net, {(J1, T0, "worker"): ETH}), {}, {b(net, "worker"): 5 * ETH}, FEE)
    anchorer.post_anchor(liar, net.spends(ETH))
    net.chain.advance(WINDOW)
    anchorer.finalize(0)
    with reverts("PoolOverdrawn"):
        claim(net, "worker", liar)
    with reverts("NotInTree"):
        net.client("worker2").claim_earnings(ETH, liar.earnings_proof(b(net, "worker")))
    with reverts("NotPending"):
        anchorer.finalize(0)
    with reverts("NotLatest"):
        anchorer.finalize(1)


def test_reads_of_a_fresh_contract(net: Net) -> None:
    c: Settlement = net.client("requester")
    assert c.epoch_count() == 0 and c.earned_of() == 0
    assert c.anchor()["state"] == "none" and c.anchor()["epoch"] == -1


def test_debits_beyond_the_signed_spend_are_refused(net: Net) -> None:
    req, first, second = net.client("requester"), net.client("sentry1"), net.client("sentry2")
    req.fund(10 * ETH)
    first.stake(ETH)
    second.stake(ETH)
    epoch = assemble(entries(net, {(J1, T0, "worker"): 2 * ETH}), {}, {}, FEE)
    me = net.addr("requester").lower()
    with refused(f"SpendExceeded(requester={me}, debitedAfter={2 * ETH}, authorised={ETH})"):
        first.post_anchor(epoch, net.spends(ETH))
    forged = net.spend("requester", 2 * ETH, signer="other")  # not the requester's key
    with refused(f"BadSpendSignature(requester={me}, signer={net.addr('other').lower()})"):
        first.post_anchor(epoch, {forged.requester: forged})
    garbage = replace(forged, signature=b"\x01" * 65)  # recovers to nobody
    with refused(f"BadSpendSignature(requester={me}, signer=0x{'0' * 40})"):
        first.post_anchor(epoch, {forged.requester: garbage})
    roots = [epoch.earnings_tree.root, epoch.entries_tree.root, [net.addr("requester")], [2 * ETH]]
    with reverts("LengthMismatch"):
        first.send("postAnchor", [*roots, [2 * ETH], []])
    spend = net.spends(2 * ETH)
    first.post_anchor(epoch, spend)
    assert req.pool_of()["debited"] == 2 * ETH
    net.chain.advance(WINDOW)
    # A second, uncoordinated anchorer anchors the same lines from its own (empty) base: the
    # pools would cover it, the requester's spend does not.
    with refused(f"SpendExceeded(requester={me}, debitedAfter={4 * ETH}, authorised={2 * ETH})"):
        second.post_anchor(epoch, spend)
    assert req.pool_of() == {"balance": 8 * ETH, "debited": 2 * ETH, "leaving": 0, "leave_at": 0}
