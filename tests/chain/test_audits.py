"""Audits of a pending anchor on a real EVM (``EpochAudits.sol``): an anchorer that moves
earnings from one worker to another, debits a requester beyond its entries, or counts a line
twice loses its anchor and its bond; an honest one answers every sum dispute."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.settlement.audits import DEBIT, EARNINGS, answer, inflated, net_ceil, net_floor
from consensus.settlement.epoch import Entry, Epoch, assemble
from consensus.settlement.merkle import EARNINGS_TYPES, ENTRY_TYPES, MerkleTree, MultiProof
from node.chain.audit_calls import SumDispute
from node.chain.client import Settlement
from tests.chain.conftest import ETH, Net
from tests.chain.test_epochs import (
    FEE,
    J1,
    J2,
    J3,
    T0,
    WINDOW,
    b,
    entries,
    refused,
    reverts,
    voucher_sig,
)

BURN = "0x000000000000000000000000000000000000dEaD"


def final_first_epoch(net: Net) -> tuple[Settlement, Epoch]:
    """A funded requester, a bonded anchorer, and epoch 0 final: worker 1 ETH on J1."""
    net.client("requester").fund(10 * ETH)
    anchorer = net.client("sentry1")
    anchorer.stake(ETH)
    first = assemble(entries(net, {(J1, T0, "worker"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(first, net.spends(ETH))
    net.chain.advance(WINDOW)
    anchorer.finalize(0)
    return anchorer, first


def dispute_of(net: Net, kind: int, who: str, amount: int) -> SumDispute:
    (d,) = net.client("other").sum_disputes(1)
    assert (d.kind, d.party, d.amount) == (kind, b(net, who), amount)
    return d


def _proof_of(epoch: Epoch, shown: tuple[Entry, ...]) -> MultiProof:
    return epoch.entries_tree.multi_proof([e.leaf() for e in shown])


def send_answer(anchorer: Settlement, d: SumDispute, epoch: Epoch, base: dict[bytes, int]) -> None:
    a = answer(epoch, base, d.kind, d.party)
    anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)


def post_misdirected(net: Net, anchorer: Settlement, first: Epoch) -> tuple[Epoch, Epoch]:
    """Epoch 1: worker earns 2 ETH more on J2, worker2 1 ETH on J3; the entries say so, but the
    leaves credit worker2 with worker's 2 ETH too (the debit and the spend are right). The
    honest epoch and the one posted."""
    lines = {(J1, T0, "worker"): ETH, (J2, T0, "worker"): 2 * ETH, (J3, T0, "worker2"): ETH}
    honest = assemble(entries(net, lines), first.lines, first.earnings, FEE)
    w, w2 = b(net, "worker"), b(net, "worker2")
    moved = {**honest.earnings, w: first.earnings[w], w2: honest.earnings[w2] + 2 * ETH * 99 // 100}
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(moved.items())])
    bad = replace(honest, earnings=moved, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(4 * ETH))
    return honest, bad


def test_misdirected_earnings_are_disputed_and_the_anchor_voided(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    honest, bad = post_misdirected(net, anchorer, first)
    w2, moved = b(net, "worker2"), bad.earnings
    # A watcher with the entries and the published leaves sees whose leaf grew too much.
    assert inflated(bad.earnings, first.earnings, honest.entries, FEE) == [w2]
    with refused(f"NotAnchorer(caller={net.addr('worker').lower()}, bonded=0)"):  # unbonded
        net.client("worker").dispute_earnings(1, w2, moved[w2], bad.earnings_proof(w2))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    with reverts("NotInTree"):
        watcher.dispute_earnings(1, w2, moved[w2] + 1, bad.earnings_proof(w2))
    watcher.dispute_earnings(1, w2, moved[w2], bad.earnings_proof(w2))
    with reverts("AlreadyDisputed"):
        watcher.dispute_earnings(1, w2, moved[w2], bad.earnings_proof(w2))
    d = dispute_of(net, EARNINGS, "worker2", moved[w2])
    a = answer(bad, first.earnings, EARNINGS, w2)
    with refused(f"SumShort(shown={net_ceil(ETH, FEE)}, owed={moved[w2]})"):  # net of the fee
        anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
    with reverts("AnswerTimeNotOver"):
        watcher.void_sum(d)
    net.chain.advance(WINDOW)
    with reverts("AnswerTimeOver"):
        anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
    with reverts("DisputesOpen"):
        anchorer.finalize(1)
    before = net.balance(net.addr("sentry2"))
    r = net.client("other").void_sum(d)  # anyone voids; the reward goes to the disputer
    assert watcher.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert r.gas > 0
    assert anchorer.stake_of()["bonded"] == 0
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 1's debit went back


def test_a_leaf_raised_by_its_fee_alone_cannot_be_answered(net: Net) -> None:
    """A worker credited its gross (the fee not taken from it) takes the fee out of the pool
    the others claim from: the answer counts its entries net of the fee."""
    anchorer, first = final_first_epoch(net)
    second = assemble(entries(net, {(J2, T0, "worker2"): 5 * ETH}), first.lines,
                      first.earnings, FEE)  # fmt: skip
    w2 = b(net, "worker2")
    gross = {**second.earnings, w2: 5 * ETH}
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(gross.items())])
    bad = replace(second, earnings=gross, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(6 * ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    assert inflated(bad.earnings, first.earnings, bad.entries, FEE) == [w2]
    watcher.dispute_earnings(1, w2, gross[w2], bad.earnings_proof(w2))
    d = dispute_of(net, EARNINGS, "worker2", gross[w2])
    a = answer(bad, first.earnings, EARNINGS, w2)
    with refused(f"SumShort(shown={net_ceil(5 * ETH, FEE)}, owed={5 * ETH})"):
        anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)


def test_honest_anchorer_answers_earnings_and_debit_disputes(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    lines = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker"): ETH, (J3, T0, "worker2"): ETH}
    second = assemble(entries(net, lines), first.lines, first.earnings, FEE)
    assert [e.previous for e in second.entries] == [ETH, 0, 0]
    anchorer.post_anchor(second, net.spends(6 * ETH))
    w = b(net, "worker")
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_earnings(1, w, second.earnings[w], second.earnings_proof(w))
    d = dispute_of(net, EARNINGS, "worker", second.earnings[w])
    a = answer(second, first.earnings, EARNINGS, w)
    assert a.base == first.earnings[w] and len(a.entries) == 2
    with reverts("NotInTree"):  # a base leaf the last final root does not hold
        anchorer.answer_sum(d, (a.base + 1, a.base_proof), a.entries, a.proof)
    with refused(f"SumShort(shown={net_ceil(3 * ETH, FEE)}, owed={second.earnings[w]})"):  # no base
        anchorer.answer_sum(d, (0, []), a.entries, a.proof)
    with reverts("EntriesUnordered"):
        anchorer.answer_sum(d, (a.base, a.base_proof), a.entries[::-1], a.proof)
    with reverts("NotAnchorer"):  # only the anchorer answers (it holds the grace that follows)
        watcher.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
    other = answer(second, first.earnings, EARNINGS, b(net, "worker2"))
    with refused("NotOfParty"):
        anchorer.answer_sum(d, (a.base, a.base_proof), other.entries, other.proof)
    # J1's entry claiming to add all 3 ETH: not the anchored entry
    forged = sorted((replace(e, previous=0) for e in a.entries), key=lambda e: e.leaf())
    with reverts("NotInTree"):
        anchorer.answer_sum(d, (a.base, a.base_proof), forged, a.proof)
    send_answer(anchorer, d, second, first.earnings)
    assert net.client("other").sum_disputes(1) == []
    with reverts("NoDispute"):
        anchorer.void_sum(d)
    with reverts("NoDispute"):  # answered once is answered
        send_answer(anchorer, d, second, first.earnings)
    with reverts("AlreadyDisputed"):  # and cannot be raised again
        watcher.dispute_earnings(1, w, second.earnings[w], second.earnings_proof(w))

    req = net.client("requester")
    with reverts("DebitsMismatch"):
        req.send("disputeDebit", [1, [net.addr("requester")], [1]])
    with refused(f"NotYourEntry(requester=0x{'0' * 40}, caller={net.addr('other').lower()})"):
        net.client("other").dispute_debit(1)
    req.dispute_debit(1)
    d = dispute_of(net, DEBIT, "requester", 4 * ETH)
    a = answer(second, first.earnings, DEBIT, b(net, "requester"))
    some = a.entries[:1]
    with refused(f"SumShort(shown={some[0].added}, owed={4 * ETH})"):  # a debit has no base:
        anchorer.answer_sum(d, (1, []), some, _proof_of(second, some))  # one given is ignored
    net.chain.advance(60)  # answered a while after the post: its grace ends after the window
    send_answer(anchorer, d, second, first.earnings)
    deadline = req.anchor()["dispute_deadline"]
    net.chain.advance(deadline - net.chain.now())
    with reverts("WindowClosed"):  # sum disputes open in the window only
        req.dispute_debit(1)
    with reverts("WindowOpen"):  # the answers revealed entries: they may be disputed a while
        anchorer.finalize(1)
    e = second.entries[0]
    req.dispute(1, e, second.entry_proof(e))  # an entry dispute in that grace is taken
    anchorer.answer(1, e, voucher_sig(net, e))
    net.chain.advance(WINDOW)
    anchorer.finalize(1)
    with reverts("NotPending"):
        anchorer.answer_sum(d, (0, []), [], a.proof)


def test_a_debit_above_the_entries_is_voided_for_the_requester(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    second = assemble(entries(net, {(J2, T0, "worker"): ETH}), first.lines, first.earnings, FEE)
    padded = replace(second, debits={b(net, "requester"): 2 * ETH})  # within the 3 ETH spend
    anchorer.post_anchor(padded, net.spends(3 * ETH))
    req = net.client("requester")
    req.dispute_debit(1)
    d = dispute_of(net, DEBIT, "requester", 2 * ETH)
    a = answer(second, first.earnings, DEBIT, b(net, "requester"))
    with refused(f"SumShort(shown={ETH}, owed={2 * ETH})"):
        anchorer.answer_sum(d, (0, []), a.entries, a.proof)
    net.chain.advance(WINDOW)
    req.void_sum(d)
    assert req.anchor()["state"] == "void"
    assert req.pool_of()["balance"] == 9 * ETH and req.pool_of()["debited"] == ETH


def test_a_line_counted_twice_voids_the_anchor_at_once(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    # J1 grows to 2 ETH, but the entry says it had nothing before: 1 ETH counted twice.
    stale = assemble(entries(net, {(J1, T0, "worker"): 2 * ETH}), {}, first.earnings, FEE)
    anchorer.post_anchor(stale, net.spends(3 * ETH))
    (e,) = stale.entries
    (o,) = first.entries
    catcher = net.client("worker2")
    with reverts("NotFinalEpoch"):
        catcher.void_conflict(1, (e, stale.entry_proof(e)), (5, o, first.entry_proof(o)))
    with reverts("NotInTree"):
        catcher.void_conflict(1, (e, stale.entry_proof(e)), (0, replace(o, amount=3 * ETH), []))
    unrelated = replace(o, job=J3)
    with reverts("NoConflict"):
        catcher.void_conflict(1, (e, stale.entry_proof(e)), (0, unrelated, []))
    with reverts("NoConflict"):  # the same entry is no second count
        catcher.void_conflict(1, (e, stale.entry_proof(e)), (1, e, stale.entry_proof(e)))
    before = net.balance(net.addr("worker2"))
    r = catcher.void_conflict(1, (e, stale.entry_proof(e)), (0, o, first.entry_proof(o)))
    assert net.balance(net.addr("worker2")) - before + net.gas_cost(r.tx_hash) == ETH // 2
    assert catcher.anchor()["state"] == "void"
    with reverts("NotPending"):
        catcher.void_conflict(1, (e, stale.entry_proof(e)), (0, o, first.entry_proof(o)))


@pytest.mark.parametrize("net", ["embedded"], indirect=True)
def test_two_entries_for_one_line_in_one_anchor_void_it(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    r, w = b(net, "requester"), b(net, "worker")
    twice = [Entry(r, w, J2, T0, ETH), Entry(r, w, J2, T0, ETH, previous=1)]
    epoch = assemble([twice[0]], first.lines, first.earnings, FEE)
    tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in twice])
    doubled = replace(epoch, entries=tuple(twice), entries_tree=tree)
    anchorer.post_anchor(doubled, net.spends(2 * ETH))
    catcher = net.client("other")
    proofs = [tree.proof(e.leaf()) for e in twice]
    catcher.void_conflict(1, (twice[0], proofs[0]), (1, twice[1], proofs[1]))
    assert catcher.anchor()["state"] == "void"


def test_entries_of_a_requester_never_debited_void_the_anchor(net: Net) -> None:
    """The anchorer makes up requester X (never debited, never disputing) and answers the
    dispute of worker2's leaf with X's entry: the answer itself shows the fraud."""
    anchorer, first = final_first_epoch(net)
    x, w2 = b(net, "other"), b(net, "worker2")
    made_up = Entry(x, w2, J3, T0, 2 * ETH)
    real = entries(net, {(J2, T0, "worker"): ETH})[0]
    epoch = assemble([real, made_up], first.lines, first.earnings, FEE)
    only_real = replace(epoch, debits={b(net, "requester"): ETH})  # X is not debited
    anchorer.post_anchor(only_real, net.spends(2 * ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_earnings(1, w2, epoch.earnings[w2], epoch.earnings_proof(w2))
    d = dispute_of(net, EARNINGS, "worker2", epoch.earnings[w2])
    net.chain.advance(60)  # answered a while after the post: its grace ends after the window
    send_answer(anchorer, d, epoch, first.earnings)  # X's entry adds up: answered
    (kind, party, shown, proof) = net.client("other").sum_answers(1)[0]
    assert (kind, party, shown) == (EARNINGS, w2, [epoch.entries[1]])
    requester = b(net, "requester")
    with refused(f"SumShort(shown={ETH}, owed={ETH})"):  # the real requester is debited in full
        catcher_shows = answer(epoch, first.earnings, DEBIT, requester)
        net.client("worker").void_under_debit(1, requester, catcher_shows.entries,
                                              catcher_shows.proof)  # fmt: skip
    net.chain.advance(net.client("other").anchor()["dispute_deadline"] - net.chain.now())
    before = net.balance(net.addr("worker"))
    r = net.client("worker").void_under_debit(1, x, shown, proof)  # after the window: in grace
    assert net.client("other").anchor()["state"] == "void"
    assert net.balance(net.addr("worker")) - before + net.gas_cost(r.tx_hash) == ETH // 2


def test_a_leaf_below_its_workers_entries_voids_the_anchor_at_once(net: Net) -> None:
    """Nobody gains by a lowered leaf alone, but its worker waits (and with a leaf raised
    elsewhere, its pay goes to another): anyone voids it with the worker's entries."""
    anchorer, first = final_first_epoch(net)
    lines = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}  # worker: 2 ETH more
    honest = assemble(entries(net, lines), first.lines, first.earnings, FEE)
    w, w2 = b(net, "worker"), b(net, "worker2")
    low = {**honest.earnings, w: honest.earnings[w] - ETH // 2}
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(low.items())])
    bad = replace(honest, earnings=low, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(4 * ETH))
    catcher = net.client("other")
    mine, theirs = (answer(bad, first.earnings, EARNINGS, x) for x in (w, w2))
    leaf = (w, low[w], bad.earnings_proof(w))
    floor2 = net_floor(ETH, FEE)  # worker2 is paid its share, at least this
    with refused(f"NotLow(leaf={low[w2]}, floor={floor2})"):
        catcher.void_low_leaf(1, (w2, low[w2], bad.earnings_proof(w2)), (0, []), theirs.entries,
                              theirs.proof)  # fmt: skip
    with reverts("NotInTree"):
        catcher.void_low_leaf(1, (w, low[w] + 1, leaf[2]), (0, []), mine.entries, mine.proof)
    with reverts("NotOfParty"):
        catcher.void_low_leaf(1, leaf, (0, []), theirs.entries, theirs.proof)
    floor = net_floor(2 * ETH, FEE)  # without its base leaf shown, the bound is lower
    with refused(f"NotLow(leaf={low[w]}, floor={floor})"):
        catcher.void_low_leaf(1, leaf, (0, []), mine.entries, mine.proof)
    before = net.balance(net.addr("other"))
    r = catcher.void_low_leaf(1, leaf, (mine.base, mine.base_proof), mine.entries, mine.proof)
    assert catcher.anchor()["state"] == "void"
    assert net.balance(net.addr("other")) - before == ETH // 2 - net.gas_cost(r.tx_hash)
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 1's debit went back
    with reverts("NotPending"):
        catcher.void_low_leaf(1, leaf, (mine.base, mine.base_proof), mine.entries, mine.proof)
