"""Earnings leaves on a real EVM (``EpochLeaves.sol``): withheld ones demanded and shown in parts,
and a worker left out of them.

An anchorer that never publishes its leaves could credit a colluder that has no entries at all:
the debits are real, the leaf takes from what the other workers would claim, and nobody can
show it. A bonded watcher demands the leaves; the anchorer shows every one, in parts under the
tree's nodes at one depth (or its anchor is voided), and the window opens again so a leaf shown
can be disputed like a gossiped one. A worker the leaves leave out is shown with every leaf."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from web3 import Web3

from consensus.settlement.audits import EARNINGS, LEAVES, inflated, left_out, show
from consensus.settlement.epoch import Epoch, assemble
from consensus.settlement.leaves import FinalLeaves
from consensus.settlement.merkle import (
    EARNINGS_TYPES,
    MerkleTree,
    MultiProof,
    leaf_hash,
    verify,
)
from consensus.settlement.shown import ShownLeaves
from node.chain.audit_calls import SumDispute
from node.chain.client import Settlement
from node.cli_wallet import epoch_rows
from tests.chain.conftest import ETH, Net
from tests.chain.test_audits import final_first_epoch
from tests.chain.test_epochs import FEE, J2, J3, T0, WINDOW, b, entries, refused, reverts
from tests.unit.settlement.test_shown_leaves import tree_in_order

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


def leaves_dispute(net: Net, index: int = 1) -> SumDispute:
    (d,) = net.client("other").sum_disputes(index)
    assert (d.kind, d.party, d.amount) == (LEAVES, ZERO, 0)
    return d


def show_all(anchorer: Settlement, index: int, shown: ShownLeaves) -> int:
    """Every part, in order; the gas of all."""
    return sum(anchorer.answer_leaves(index, shown, j).gas for j in range(len(shown.nodes)))


def raw_part(shown: ShownLeaves, j: int) -> list[Any]:
    rows = shown.parts[j]
    return [[Web3.to_checksum_address(w) for w, _ in rows], [a for _, a in rows]]


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
    shown = ShownLeaves.of_rows(bad.earnings.items())
    assert len(shown.nodes) == 1 and len(shown.rows()) == 2
    with reverts("NotAnchorer"):  # only the anchorer answers
        watcher.answer_leaves(1, shown, 0)
    with reverts("NoDispute"):  # not through answerSum, which checks no leaf
        anchorer.answer_sum(d, (0, []), [], NONE)
    without = ShownLeaves.of_rows((w, a) for w, a in bad.earnings.items() if w != w2)
    with reverts("NotInTree"):  # every leaf but the colluder's: another root
        anchorer.answer_leaves(1, without, 0)
    dropped = ShownLeaves(shown.nodes, ((shown.parts[0][0],),))
    with reverts("NotInTree"):  # a part missing a leaf: not its node
        anchorer.answer_leaves(1, dropped, 0)
    with refused("BadNodes(count=3)"):
        anchorer.answer_leaves(1, ShownLeaves(shown.nodes * 3, shown.parts * 3), 0)
    with reverts("NotInTree"):  # no such part
        anchorer.send("answerLeaves", [1, list(shown.nodes), 1, raw_part(shown, 0)])
    short = raw_part(shown, 0)
    with reverts("LengthMismatch"):
        anchorer.send("answerLeaves", [1, list(shown.nodes), 0, [short[0], short[1][:1]]])
    deadline = anchorer.anchor()["dispute_deadline"]
    net.chain.advance(WINDOW // 2)
    anchorer.answer_leaves(1, shown, 0)
    assert net.client("other").sum_disputes(1) == []
    assert anchorer.anchor()["dispute_deadline"] == net.chain.now() + WINDOW  # opened again
    assert anchorer.anchor()["posted_at"] == deadline - WINDOW  # the post's time stays
    with reverts("NoDispute"):  # answered stays answered
        anchorer.answer_leaves(1, shown, 0)

    # A watcher reads the leaves off the events, and past the first window disputes the one
    # no entry gives, which the anchorer cannot answer.
    parts = watcher.leaves_shown(1)
    assert parts == shown
    (row,) = [r for r in epoch_rows(watcher) if r["epoch"] == 1]  # `settlement epochs`
    assert (row["disputes"], row["sum_disputes"]) == (1, {"leaves": 1})
    assert row["dispute_deadline"] == net.chain.now() + WINDOW
    leaves = FinalLeaves.of_shown(1, bad.earnings_tree.root, parts)
    assert inflated(leaves.amounts, first.earnings, bad.entries, FEE) == [w2]
    net.chain.advance(deadline - net.chain.now() + 60)
    watcher.dispute_earnings(1, w2, ETH, leaves.proof_of(w2))
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
        anchorer.answer_leaves(1, ShownLeaves.of_rows(bad.earnings.items()), 0)
    with reverts("DisputesOpen"):
        anchorer.finalize(1)
    assert watcher.leaves_shown(1) is None
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(d)  # anyone voids; the reward goes to the disputer
    assert anchorer.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert anchorer.stake_of()["bonded"] == 0


def test_a_tree_out_of_order_cannot_be_shown_and_its_anchor_is_voided(net: Net) -> None:
    """Leaves not sorted by hash: a tree nobody could rebuild from the entries. Its parts come
    out of order, which the contract refuses, so the demand goes unanswered."""
    anchorer, first = final_first_epoch(net)
    honest = assemble(entries(net, {(J2, T0, "worker"): 2 * ETH}), first.lines,
                      first.earnings, FEE)  # fmt: skip
    rows = [*honest.earnings.items(), *((bytes([i]) * 20, i) for i in range(3, 7))]
    rows.sort(key=lambda r: leaf_hash(EARNINGS_TYPES, list(r)))
    rows = [*rows[1:], rows[0]]  # the first leaf last
    tree, by_leaf = tree_in_order(rows)
    assert tree.root != MerkleTree.of(EARNINGS_TYPES, [list(r) for r in rows]).root
    anchorer.post_anchor(replace(honest, earnings_tree=tree), net.spends(3 * ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    shown = ShownLeaves.of_tree(tree, by_leaf)
    assert shown.root() == tree.root and len(shown.nodes) == 1
    with reverts("EntriesUnordered"):
        anchorer.answer_leaves(1, shown, 0)
    net.chain.advance(WINDOW)
    watcher.void_sum(leaves_dispute(net))
    assert anchorer.anchor()["state"] == "void"


def test_two_leaves_of_one_worker_shown_in_parts_are_proved_off_the_parts(net: Net) -> None:
    """A tree sorted by hash may still hold two leaves for worker (the second 1 ETH above its
    entries); shown a leaf per part, the watcher proves the larger off the parts as shown and
    disputes it."""
    anchorer, first = final_first_epoch(net)
    honest = assemble(entries(net, {(J2, T0, "worker"): 2 * ETH}), first.lines,
                      first.earnings, FEE)  # fmt: skip
    w = b(net, "worker")
    rows = [*honest.earnings.items(), (bytes([9]) * 20, 5), (w, honest.earnings[w] + ETH)]
    tree = MerkleTree.of(EARNINGS_TYPES, [list(r) for r in rows])
    anchorer.post_anchor(replace(honest, earnings_tree=tree), net.spends(3 * ETH))
    watcher = net.client("sentry2")
    watcher.stake(ETH)
    watcher.dispute_leaves(1)
    shown = ShownLeaves.of_rows(rows, per_part=1)
    assert len(shown.nodes) == 2 and shown.root() == tree.root
    anchorer.answer_leaves(1, shown, 1)
    anchorer.answer_leaves(1, shown, 1)  # again: still one part of two
    assert watcher.leaves_shown(1) is None and len(watcher.sum_disputes(1)) == 1
    anchorer.answer_leaves(1, shown, 0)
    parts = watcher.leaves_shown(1)
    assert parts is not None and sorted(parts.rows()) == sorted(rows)
    leaves = FinalLeaves.of_shown(1, tree.root, parts)
    assert leaves.amounts[w] == honest.earnings[w] + ETH
    assert verify(tree.root, leaf_hash(EARNINGS_TYPES, [w, leaves.amounts[w]]), leaves.proof_of(w))
    assert w in inflated(leaves.amounts, first.earnings, honest.entries, FEE)
    watcher.dispute_earnings(1, w, leaves.amounts[w], leaves.proof_of(w))


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 64])
def test_every_leaf_shows_for_trees_of_any_size(net: Net, workers: int) -> None:
    """In one part or in parts of a few leaves, including a root that is its only leaf."""
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
    shown = ShownLeaves.of_rows(earnings.items(), per_part=5)
    if workers > 1:  # in the multiproof's order, ascending: another is refused
        part = shown.parts[0]
        swapped = (part[1], part[0], *part[2:])
        with reverts("EntriesUnordered"):
            anchorer.answer_leaves(0, replace(shown, parts=(swapped, *shown.parts[1:])), 0)
    show_all(anchorer, 0, shown)
    assert watcher.sum_disputes(0) == []
    parts = watcher.leaves_shown(0)
    assert parts is not None and sorted(parts.rows()) == sorted(earnings.items())


def post_leaving_out(
    net: Net, anchorer: Settlement, first: Epoch, who: str, at: int | None = None
) -> Epoch:
    """Epoch 1: worker2 earns 1 ETH on J3, as its entry says, but the leaves leave ``who``
    out: worker (holding a leaf in the last final root) or worker2 (paid by this epoch); or,
    with ``at``, put its leaf at that."""
    honest = assemble(entries(net, {(J3, T0, "worker2"): ETH}), first.lines, first.earnings,
                      FEE)  # fmt: skip
    kept = {w: a for w, a in honest.earnings.items() if w != b(net, who)}
    if at is not None:
        kept[b(net, who)] = at
    tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(kept.items())])
    bad = replace(honest, earnings=kept, earnings_tree=tree)
    anchorer.post_anchor(bad, net.spends(2 * ETH))
    return bad


def owed_of(epoch: Epoch, base: dict[bytes, int], worker: bytes) -> tuple[Any, ...]:
    s = show(epoch.entries, epoch.entries_tree, base, EARNINGS, worker)
    return (s.base, s.base_proof), s.entries, s.proof


def show_absent(client: Settlement, worker: bytes, leaves: ShownLeaves) -> None:
    for j in range(len(leaves.nodes)):
        client.show_absent(1, worker, leaves, j)


def test_a_worker_its_entries_pay_left_out_of_the_leaves_voids_the_anchor(net: Net) -> None:
    """Shown absent part by part, from gossiped leaves: no demand needed (the contract hashes
    them)."""
    anchorer, first = final_first_epoch(net)
    bad = post_leaving_out(net, anchorer, first, "worker2")
    w, w2 = b(net, "worker"), b(net, "worker2")
    catcher = net.client("other")  # anyone, bonded or not
    assert left_out(bad.earnings, first.earnings, bad.entries, FEE) == [w2]
    leaves = ShownLeaves.of_rows(bad.earnings.items())
    owed = owed_of(bad, first.earnings, w2)
    with reverts("NotInTree"):  # not its leaves
        catcher.show_absent(1, w2, ShownLeaves.of_rows([(w, 1)]), 0)
    fake = tuple(sorted([leaves.parts[0][0], (w2, 1)], key=lambda r: leaf_hash(EARNINGS_TYPES,
                                                                             list(r))))  # fmt: skip
    with reverts("NotInTree"):  # its nodes, but not the leaves under them
        catcher.show_absent(1, w2, replace(leaves, parts=(fake,)), 0)
    with refused(f"NotMissing(worker={net.addr('worker').lower()})"):
        catcher.show_absent(1, w, leaves, 0)
    with refused("PartsMissing(shown=0)"):  # nothing shown yet
        catcher.void_missing_leaf(1, w2, owed, leaves.nodes)
    nobody = b(net, "requester")  # no leaf, owed nothing
    show_absent(catcher, nobody, leaves)
    with refused(f"NotMissing(worker={net.addr('requester').lower()})"):
        catcher.void_missing_leaf(1, nobody, ((0, []), [], NONE), leaves.nodes)
    show_absent(catcher, w2, leaves)
    with refused(f"NotMissing(worker={net.addr('worker2').lower()})"):  # its entries not shown
        catcher.void_missing_leaf(1, w2, ((0, []), [], NONE), leaves.nodes)
    before = net.balance(net.addr("other"))
    catcher.void_missing_leaf(1, w2, owed, leaves.nodes)
    assert anchorer.anchor()["state"] == "void"
    assert ETH // 2 - (net.balance(net.addr("other")) - before) < ETH // 100  # less gas
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 1's debit went back


def test_a_worker_with_a_final_leaf_left_out_voids_the_anchor_in_parts(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_leaving_out(net, anchorer, first, "worker")
    w = b(net, "worker")
    assert left_out(bad.earnings, first.earnings, bad.entries, FEE) == [w]
    extra = ShownLeaves.of_rows(bad.earnings.items())
    assert len(extra.nodes) == 1
    (base, proof), _, _ = owed_of(bad, first.earnings, w)
    assert base == first.earnings[w]
    watcher = net.client("sentry2")
    show_absent(watcher, w, extra)
    assert watcher.absent_parts(1, w, extra.nodes) == {0}
    with reverts("NotInTree"):  # a base leaf the last final root does not hold
        watcher.void_missing_leaf(1, w, ((base + 1, proof), [], NONE), extra.nodes)
    watcher.void_missing_leaf(1, w, ((base, proof), [], NONE), extra.nodes)
    assert anchorer.anchor()["state"] == "void"
