"""An anchor's entries demanded and shown in parts on a real EVM (``EpochLeaves.sol``,
``disputeEntries``/``answerEntries``).

A requester and an anchorer together can underpay a worker with an entry whose ``previous``
is raised to its own amount: it adds nothing, so no leaf looks wrong and no sum dispute
brings it out, yet the line's final amount jumps and the worker is never paid the rest of
the voucher it holds. Withheld from gossip, nobody could dispute that ``previous``. So a
bonded watcher demands the entries; the anchorer shows every one, in parts under the entries
tree's nodes at one depth (or its anchor is voided), the window opens again, and the raised
``previous`` is disputed (``disputePrevious``) with a proof read off the parts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from consensus.settlement.audits import ENTRIES, LEAVES, PREVIOUS
from consensus.settlement.epoch import Epoch, assemble
from consensus.settlement.merkle import ENTRY_TYPES, MerkleTree, MultiProof
from consensus.settlement.shown import ShownEntries, ShownLeaves
from node.chain.audit_calls import ANSWERED, SumDispute
from node.chain.client import Settlement
from node.chain.epoch_calls import entry_args
from tests.chain.conftest import ETH, Net
from tests.chain.test_audits import final_first_epoch
from tests.chain.test_epochs import FEE, J1, J2, T0, WINDOW, b, entries, refused, reverts

ZERO = bytes(20)


def raised_epoch(net: Net, first: Epoch, previous: int) -> Epoch:
    """Epoch 1: worker's line J1 (1 ETH, final in epoch 0) has a 3 ETH voucher, its entry
    naming ``previous``; a new line J2 pays worker 1 ETH. With ``previous`` 3 ETH the J1 entry
    adds nothing: worker's leaf grows by J2 alone, and the requester is debited 1 ETH."""
    line = (J1, T0, b(net, "worker"))
    grown = entries(net, {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker"): ETH})
    epoch = assemble(grown, {line: previous}, first.earnings, FEE)
    if previous < 3 * ETH:
        return epoch
    # An entry that adds nothing: the honest assembly leaves it out, a colluder does not.
    kept = (*epoch.entries, replace(grown[0], previous=previous))
    tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in kept])
    return replace(epoch, entries=kept, entries_tree=tree)


def post_raised(net: Net, first: Epoch, previous: int) -> Epoch:
    epoch = raised_epoch(net, first, previous)
    net.client("sentry1").post_anchor(epoch, net.spends(5 * ETH))
    return epoch


def bonded(net: Net, who: str = "sentry2") -> Settlement:
    w = net.client(who)
    w.stake(ETH)  # a demand holds the anchor: only a bonded watcher raises it
    return w


def demand(net: Net, kind: int = ENTRIES) -> SumDispute:
    (d,) = [x for x in net.client("other").sum_disputes(1, answered=True) if x.kind == kind]
    assert (d.party, d.amount) == (ZERO, 0)
    return d


def raw(shown: ShownEntries, j: int, rows: Any = None) -> list[Any]:
    return [1, list(shown.nodes), j, [entry_args(e) for e in (rows or shown.parts[j])]]


def test_a_withheld_raised_previous_is_shown_on_demand_disputed_and_voided(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_raised(net, first, previous=3 * ETH)
    raised = next(e for e in bad.entries if e.job == J1)
    assert raised.added == 0 and bad.debits[b(net, "requester")] == ETH  # 2 ETH underpaid
    with refused(f"NotAnchorer(caller={net.addr('worker').lower()}, bonded=0)"):
        net.client("worker").dispute_entries(1)
    w = bonded(net)
    w.dispute_entries(1)
    with reverts("AlreadyDisputed"):
        w.dispute_entries(1)
    d = demand(net)
    shown = ShownEntries.of_rows(bad.entries, per_part=1)  # two parts of one entry
    assert len(shown.nodes) == 2
    with reverts("NotAnchorer"):  # only the anchorer answers
        w.answer_entries(1, shown, 0)
    with reverts("NoDispute"):  # not through answerSum, which shows entries of one party
        anchorer.answer_sum(d, (0, []), [], MultiProof((), (), ()))
    with reverts("NoDispute"):  # nor as leaves: that demand was not raised
        anchorer.answer_leaves(1, ShownLeaves.of_rows(bad.earnings.items()), 0)
    with refused("BadNodes(count=3)"):
        nodes = [*shown.nodes, shown.nodes[0]]
        anchorer.send("answerEntries", [1, nodes, 0, [entry_args(shown.parts[0][0])]])
    with reverts("NotInTree"):  # the entry under the other node
        anchorer.send("answerEntries", raw(shown, 0, shown.parts[1]))
    with reverts("NotInTree"):  # no such part
        anchorer.send("answerEntries", raw(shown, 2, shown.parts[0]))
    whole = ShownEntries.of_rows(bad.entries)
    with reverts("EntriesUnordered"):  # a multiproof of all: only in the tree's hash order
        backwards = [entry_args(e) for e in reversed(whole.parts[0])]
        anchorer.send("answerEntries", [1, list(whole.nodes), 0, backwards])
    with reverts("NotInTree"):  # an entry changed
        anchorer.send("answerEntries", raw(shown, 0, [replace(shown.parts[0][0], previous=1)]))
    deadline = anchorer.anchor()["dispute_deadline"]
    net.chain.advance(WINDOW // 2)
    anchorer.answer_entries(1, shown, 0)
    assert w.sum_answer_by(d) != ANSWERED  # one part of two
    assert anchorer.anchor()["dispute_deadline"] == deadline
    anchorer.answer_entries(1, shown, 0)  # again: nothing more shown
    assert w.sum_answer_by(d) != ANSWERED
    anchorer.answer_entries(1, shown, 1)
    assert w.sum_answer_by(d) == ANSWERED
    assert anchorer.anchor()["dispute_deadline"] == net.chain.now() + WINDOW  # opened again
    with reverts("NoDispute"):  # answered stays answered
        anchorer.answer_entries(1, shown, 1)

    # A watcher reads the entries off the events, with proofs in the entries root, and past
    # the first window disputes the raised `previous`, which nothing answers.
    assert w.entries_shown(1) == shown
    parts = [(entries_, p) for kind, _, entries_, p in w.sum_answers(1) if kind == ENTRIES]
    assert {e for es, _ in parts for e in es} == set(bad.entries)  # part 0 twice
    proof = next(p for es, p in parts if raised in es).single_proofs()[raised.leaf()]
    net.chain.advance(deadline - net.chain.now() + 60)
    w.dispute_previous(1, raised, proof)
    (p,) = [x for x in w.sum_disputes(1) if x.kind == PREVIOUS]
    (o,) = first.entries
    with refused(f"SumShort(shown={ETH}, owed={3 * ETH})"):
        anchorer.answer_previous(p, raised, (0, o, first.entry_proof(o)))
    net.chain.advance(WINDOW)
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(p)
    assert anchorer.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 0's alone


def test_an_unanswered_entries_demand_voids_the_anchor(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    bad = post_raised(net, first, previous=3 * ETH)
    w = bonded(net)
    net.chain.advance(WINDOW - 60)
    w.dispute_entries(1)
    d = demand(net)
    with reverts("AnswerTimeNotOver"):
        w.void_sum(d)
    net.chain.advance(120)
    with reverts("WindowClosed"):  # a demand is raised in the window only
        w.dispute_leaves(1)
    net.chain.advance(WINDOW)
    with reverts("AnswerTimeOver"):
        anchorer.answer_entries(1, ShownEntries.of_rows(bad.entries), 0)
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(d)
    assert anchorer.anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2


def test_an_honest_anchor_shows_leaves_and_entries_each_for_its_own_demand(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    honest = post_raised(net, first, previous=ETH)
    w = bonded(net)
    w.dispute_leaves(1)
    w.dispute_entries(1)
    leaves = ShownLeaves.of_rows(honest.earnings.items())
    shown = ShownEntries.of_rows(honest.entries)
    assert len(leaves.nodes) == len(shown.nodes) == 1
    anchorer.answer_leaves(1, leaves, 0)
    assert w.sum_answer_by(demand(net, LEAVES)) == ANSWERED
    assert w.sum_answer_by(demand(net)) != ANSWERED  # the leaves' part is not the entries'
    anchorer.answer_entries(1, shown, 0)
    assert w.sum_answer_by(demand(net)) == ANSWERED
    assert w.sum_disputes(1) == []
    net.chain.advance(WINDOW + 2)
    anchorer.finalize(1)
    assert w.anchor()["state"] == "final"
