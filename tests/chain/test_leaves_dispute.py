"""Withheld earnings leaves, demanded on chain (``disputeLeaves``/``answerLeaves``) on a real EVM.

An anchorer that never publishes its leaves could credit a colluder that has no entries at all:
the debits are real, the leaf takes from what the other workers would claim, and nobody can
show it. A bonded watcher demands the leaves; the anchorer shows every one (or its anchor is
voided), and the window opens again so a leaf shown can be disputed like a gossiped one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consensus.settlement.audits import (
    EARNINGS,
    LEAVES,
    LeavesAnswer,
    all_leaves,
    inflated,
    left_out,
    show,
)
from consensus.settlement.epoch import Epoch, assemble
from consensus.settlement.leaves import FinalLeaves
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, MultiProof, leaf_hash
from node.chain.audit_calls import SumDispute
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.payee import Payee
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_audits import final_first_epoch
from tests.chain.test_audits_node import WINDOW as NODE_WINDOW
from tests.chain.test_audits_node import followed_first_epoch, hand
from tests.chain.test_epochs import FEE, J2, J3, T0, WINDOW, b, entries, refused, reverts
from tests.chain.test_settlement_node import StubNet, node_of

ZERO = bytes(20)
NONE = MultiProof((), (), ())  # no entries shown


def post_from_nowhere(net: Net, anchorer: Settlement, first: Epoch) -> Epoch:
    """Epoch 1: worker earns 2 ETH more on J2, as its entry says; the leaves also credit
    worker2 (the colluder) 1 ETH that no entry gives it. Debits and spends are right."""
    honest = assemble(entries(net, {(J2, T0, "worker"): 2 * ETH}), first.lines,
                      first.earnings, FEE)  # fmt: skip
    credited = {**honest.earnings, b(net, "worker2"): ETH}
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(credited.items())])
    bad = replace(honest, earnings=credited, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(3 * ETH))
    return bad


def leaves_dispute(net: Net) -> SumDispute:
    (d,) = net.client("other").sum_disputes(1)
    assert (d.kind, d.party, d.amount) == (LEAVES, ZERO, 0)
    return d


def test_withheld_leaves_are_shown_on_demand_and_a_leaf_from_nowhere_voided(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_from_nowhere(net, anchorer, first)
    w2 = b(net, "worker2")
    with refused(f"NotAnchorer(caller={net.addr('worker').lower()}, bonded=0)"):  # unbonded
        net.client("worker").dispute_leaves(1)
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    with reverts("AlreadyDisputed"):
        watcher.dispute_leaves(1)
    d = leaves_dispute(net)
    shown = all_leaves(bad.earnings.items())
    assert len(shown.workers) == 2
    with reverts("NotAnchorer"):  # only the anchorer answers
        watcher.answer_leaves(1, shown)
    with reverts("NoDispute"):  # not through answerSum, which checks no leaf
        anchorer.answer_sum(d, (0, []), [], NONE)
    without = all_leaves((w, a) for w, a in bad.earnings.items() if w != w2)
    with reverts("NotInTree"):  # every leaf but the colluder's: another root
        anchorer.answer_leaves(1, without)
    dropped = LeavesAnswer(shown.workers[:1], shown.amounts[:1])
    with reverts("NotInTree"):  # one leaf standing for the root
        anchorer.answer_leaves(1, dropped)
    with reverts("LengthMismatch"):
        anchorer.answer_leaves(1, replace(shown, amounts=shown.amounts[:1]))
    deadline = anchorer.anchor()["dispute_deadline"]
    net.chain.advance(WINDOW // 2)
    anchorer.answer_leaves(1, shown)
    assert net.client("other").sum_disputes(1) == []
    assert anchorer.anchor()["dispute_deadline"] == net.chain.now() + WINDOW  # opened again
    with reverts("NoDispute"):  # answered stays answered
        anchorer.answer_leaves(1, shown)

    # A watcher reads the leaves off the answer, and past the first window disputes the one
    # no entry gives, which the anchorer cannot answer.
    rows = watcher.answered_leaves(1)
    assert rows is not None and sorted(rows) == sorted(bad.earnings.items())
    leaves = FinalLeaves.of_rows(1, bad.earnings_tree.root, rows)
    assert leaves.tree().root == bad.earnings_tree.root
    assert inflated(leaves.amounts, first.earnings, bad.entries, FEE) == [w2]
    net.chain.advance(deadline - net.chain.now() + 60)
    watcher.dispute_earnings(1, w2, ETH, leaves.tree().proof(leaf_hash(EARNINGS_TYPES, [w2, ETH])))
    (e,) = [x for x in net.client("other").sum_disputes(1) if x.kind == EARNINGS]
    with refused(f"SumShort(shown=0, owed={ETH})"):
        anchorer.answer_sum(e, (0, []), [], NONE)
    net.chain.advance(WINDOW)
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(e)
    assert anchorer.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 1's debit went back


def test_an_unanswered_leaves_dispute_voids_the_anchor(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_from_nowhere(net, anchorer, first)
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    d = leaves_dispute(net)
    with reverts("AnswerTimeNotOver"):
        watcher.void_sum(d)
    net.chain.advance(WINDOW)
    with reverts("WindowClosed"):  # raised in the window only
        net.client("sentry1").dispute_leaves(1)
    with reverts("AnswerTimeOver"):
        anchorer.answer_leaves(1, all_leaves(bad.earnings.items()))
    with reverts("DisputesOpen"):
        anchorer.finalize(1)
    assert watcher.answered_leaves(1) is None
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(d)  # anyone voids; the reward goes to the disputer
    assert anchorer.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert anchorer.stake_of()["bonded"] == 0


def test_two_leaves_of_one_worker_are_shown_and_the_larger_audited(net: Net) -> None:
    """A root may hold two leaves for one worker (gossip cannot carry them; an answer can): the
    watcher keeps both for proofs and audits the larger, the one a claim would take."""
    anchorer, first = final_first_epoch(net)
    honest = assemble(entries(net, {(J2, T0, "worker"): 2 * ETH}), first.lines,
                      first.earnings, FEE)  # fmt: skip
    w = b(net, "worker")
    rows = [*honest.earnings.items(), (w, honest.earnings[w] + ETH)]
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(rows)])
    anchorer.post_anchor(replace(honest, earnings_tree=tree), net.spends(3 * ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    answer = all_leaves(rows)
    anchorer.answer_leaves(1, answer)
    shown = watcher.answered_leaves(1)
    assert shown is not None and sorted(shown) == sorted(rows)
    leaves = FinalLeaves.of_rows(1, tree.root, shown)
    assert leaves.tree().root == tree.root and leaves.amounts[w] == honest.earnings[w] + ETH
    assert inflated(leaves.amounts, first.earnings, honest.entries, FEE) == [w]


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 64])
def test_every_leaf_answers_for_trees_of_any_size(net: Net, workers: int) -> None:
    """The multiproof of all leaves needs no proof hashes at any tree size (the contract
    takes none), including a root that is itself the only leaf."""
    net.client("requester").fund(10 * ETH)
    anchorer = net.client("sentry1")
    anchorer.stake(ETH)
    first = assemble(entries(net, {(J2, T0, "worker"): ETH}), {}, {}, FEE)
    earnings = {i.to_bytes(20, "big"): i * 1000 for i in range(1, workers)}
    earnings.update(first.earnings)
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(earnings.items())])
    anchorer.post_anchor(replace(first, earnings=earnings, earnings_tree=tree), net.spends(ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(0)
    shown = all_leaves(earnings.items())
    if workers > 2:  # in the multiproof's order: another pairs other leaves
        swap = [2, 1, 0, *range(3, workers)]
        with reverts("NotInTree"):
            anchorer.answer_leaves(
                0,
                LeavesAnswer(
                    tuple(shown.workers[i] for i in swap), tuple(shown.amounts[i] for i in swap)
                ),
            )
    anchorer.answer_leaves(0, shown)
    assert sorted(watcher.answered_leaves(0) or []) == sorted(earnings.items())


async def test_a_standing_by_anchorer_demands_withheld_leaves_and_voids_a_leaf_from_nowhere(
    tmp_path: Path,
) -> None:
    """The cheat gossips its entries but not its leaves, one of which credits a colluder that
    has no entry. Past half the window the standby demands the leaves; the cheat shows them
    (or would be voided for not), the standby reads them off the answer and disputes the
    colluder's leaf, which no entries answer, and voids the anchor when the answer time ends."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        cheat, watch = net.client("sentry1"), net.client("other")
        bad = post_from_nowhere(net, cheat, first)
        hand(standby, 1, bad, leaves=False)
        await standby.step()
        assert watch.sum_disputes(1) == [], "demanded before half the window"
        net.chain.advance(NODE_WINDOW // 2 + 1)
        await standby.step()
        d = leaves_dispute(net)
        await standby.step()  # demanded once
        assert watch.sum_disputes(1) == [d]
        cheat.answer_leaves(1, all_leaves(bad.earnings.items()))
        await standby.step()
        (e,) = watch.sum_disputes(1)
        assert (e.kind, e.party, e.amount) == (EARNINGS, b(net, "worker2"), ETH)
        net.chain.advance(NODE_WINDOW + 1)
        await standby.step()
        assert watch.anchor()["state"] == "void"
        assert standby.auditor.raised == 3  # the demand, the dispute, the void
        assert cheat.stake_of()["bonded"] == 0


async def test_a_worker_claims_from_leaves_shown_on_chain_when_none_were_gossiped(
    tmp_path: Path,
) -> None:
    """The anchorer gossips no leaves; a watcher demands them and the anchorer shows them. Once
    final, the worker (its node heard no leaves) claims with the leaves read off the answer."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    anchorer, watcher, worker = (net.client(who) for who in ("sentry1", "sentry2", "worker"))
    anchorer.stake(ETH)
    watcher.stake(ETH)
    epoch = assemble(entries(net, {(J2, T0, "worker"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(epoch, net.spends(ETH))
    watcher.dispute_leaves(0)
    anchorer.answer_leaves(0, all_leaves(epoch.earnings.items()))
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        refused = await payee.claim()
        assert refused["claimed"] is False, "nothing final yet"
        net.chain.advance(NODE_WINDOW + 1)
        anchorer.finalize(0)
        done = await payee.claim()
    assert done["claimed"] is True and done["epoch"] == 0
    assert worker.earned_of() == ETH - ETH // 100


def post_leaving_out(net: Net, anchorer: Settlement, first: Epoch, who: str) -> Epoch:
    """Epoch 1: worker2 earns 1 ETH on J3, as its entry says, but the leaves leave ``who``
    out: worker (holding a leaf in the last final root) or worker2 (paid by this epoch)."""
    honest = assemble(entries(net, {(J3, T0, "worker2"): ETH}), first.lines, first.earnings,
                      FEE)  # fmt: skip
    kept = {w: a for w, a in honest.earnings.items() if w != b(net, who)}
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(kept.items())])
    bad = replace(honest, earnings=kept, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(2 * ETH))
    return bad


def owed_of(epoch: Epoch, base: dict[bytes, int], worker: bytes) -> tuple[Any, ...]:
    s = show(epoch.entries, epoch.entries_tree, base, EARNINGS, worker)
    return (s.base, s.base_proof), s.entries, s.proof


def test_a_worker_its_entries_pay_left_out_of_the_leaves_voids_the_anchor(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_leaving_out(net, anchorer, first, "worker2")
    w, w2 = b(net, "worker"), b(net, "worker2")
    catcher = net.client("other")  # anyone, bonded or not
    rows = list(bad.earnings.items())
    assert left_out(bad.earnings, first.earnings, bad.entries, FEE) == [w2]
    with refused("LeavesNotShown(epoch=1)"):  # only leaves shown on chain count
        catcher.void_missing_leaf(1, w2, owed_of(bad, first.earnings, w2), rows)
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    anchorer.answer_leaves(1, all_leaves(rows))
    shown = watcher.answered_leaves(1)
    assert shown is not None
    assert shown == [(w, bad.earnings[w])]
    with refused("LeavesNotShown(epoch=1)"):  # not as shown
        catcher.void_missing_leaf(1, w2, owed_of(bad, first.earnings, w2), [(w, 1)])
    with refused(f"NotMissing(worker={net.addr('worker').lower()})"):
        catcher.void_missing_leaf(1, w, owed_of(bad, first.earnings, w), shown)
    nobody = b(net, "requester")  # no leaf, owed nothing
    with refused(f"NotMissing(worker={net.addr('requester').lower()})"):
        catcher.void_missing_leaf(1, nobody, ((0, []), [], NONE), shown)
    with refused(f"NotMissing(worker={net.addr('worker2').lower()})"):  # its entries not shown
        catcher.void_missing_leaf(1, w2, ((0, []), [], NONE), shown)
    before = net.balance(net.addr("other"))
    catcher.void_missing_leaf(1, w2, owed_of(bad, first.earnings, w2), shown)
    assert anchorer.anchor()["state"] == "void"
    assert ETH // 2 - (net.balance(net.addr("other")) - before) < ETH // 100  # less gas
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 1's debit went back


def test_a_worker_with_a_final_leaf_left_out_voids_the_anchor(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_leaving_out(net, anchorer, first, "worker")
    w = b(net, "worker")
    assert left_out(bad.earnings, first.earnings, bad.entries, FEE) == [w]
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    anchorer.answer_leaves(1, all_leaves(bad.earnings.items()))
    shown = watcher.answered_leaves(1)
    assert shown is not None
    (base, proof), _, _ = owed_of(bad, first.earnings, w)
    assert base == first.earnings[w]
    with reverts("NotInTree"):  # a base leaf the last final root does not hold
        watcher.void_missing_leaf(1, w, ((base + 1, proof), [], NONE), shown)
    watcher.void_missing_leaf(1, w, ((base, proof), [], NONE), shown)
    assert anchorer.anchor()["state"] == "void"


async def test_a_standing_by_anchorer_voids_an_anchor_that_leaves_a_worker_out(
    tmp_path: Path,
) -> None:
    """The cheat gossips its entries and its leaves, which leave out worker2 though its entry
    pays it: the standby demands the leaves on chain (gossiped ones prove nothing there) and,
    once shown, voids the anchor."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        cheat, watch = net.client("sentry1"), net.client("other")
        bad = post_leaving_out(net, cheat, first, "worker2")
        hand(standby, 1, bad)
        await standby.step()
        d = leaves_dispute(net)
        await standby.step()  # demanded once
        assert watch.anchor()["state"] == "pending"
        cheat.answer_leaves(1, all_leaves(bad.earnings.items()))
        await standby.step()
        assert watch.anchor()["state"] == "void"
        assert standby.auditor.raised == 2  # the demand, the void
        assert d.answer_by > 0
