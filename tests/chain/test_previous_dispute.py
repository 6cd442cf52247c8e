"""An entry's ``previous`` disputed on a real EVM (``EpochAudits.sol``, ``disputePrevious``).

Each entry adds ``amount - previous`` in its epoch, ``previous`` being its line's amount in the
last final anchor. One above that lowers what the line pays the worker, and its requester's
debit with it, though the worker holds a voucher for the whole amount: a requester and an
anchorer together could underpay the worker so, and no voucher, entry or sum dispute shows it
(the sums follow from the entries). A bonded watcher disputes the entry; the anchorer must show
the line's entry in a final anchor with exactly that amount, which only an honest ``previous``
has, or the anchor is voided."""

from __future__ import annotations

from dataclasses import replace

from consensus.settlement.audits import EARNINGS, PREVIOUS, answer
from consensus.settlement.epoch import Entry, Epoch, assemble
from consensus.settlement.merkle import ENTRY_TYPES, MerkleTree, MultiProof
from node.chain.audit_calls import ANSWERED, SumDispute
from node.chain.client import Settlement
from node.cli_wallet import epoch_rows
from tests.chain.conftest import ETH, Net
from tests.chain.test_audits import final_first_epoch
from tests.chain.test_epochs import FEE, J1, J2, T0, WINDOW, b, entries, refused, reverts

ZERO = bytes(20)


def post_grown(net: Net, first: Epoch, previous: int) -> Epoch:
    """Epoch 1: worker's line J1 grows from 1 ETH (final in epoch 0) to 3 ETH, its entry
    naming ``previous``; a new line J2 pays worker 1 ETH."""
    line = (J1, T0, b(net, "worker"))
    grown = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker"): ETH}
    epoch = assemble(entries(net, grown), {line: previous}, first.earnings, FEE)
    net.client("sentry1").post_anchor(epoch, net.spends(5 * ETH))
    return epoch


def watcher(net: Net) -> Settlement:
    w = net.client("sentry2")
    w.stake(ETH)  # a dispute holds the anchor: only a bonded watcher raises it
    return w


def raised(net: Net, epoch: Epoch) -> SumDispute:
    (d,) = net.client("other").sum_disputes(1)
    grown = next(e for e in epoch.entries if e.job == J1)
    assert (d.kind, d.party, d.amount) == (PREVIOUS, ZERO, int.from_bytes(grown.leaf()))
    return d


def test_a_previous_above_the_lines_final_amount_voids_the_anchor(net: Net) -> None:
    """The entry says J1 had 2 ETH before, not 1: worker is paid 1 ETH this epoch for a
    voucher that adds 2. No final entry of J1 has 2 ETH, so nothing answers the dispute."""
    anchorer, first = final_first_epoch(net)
    bad = post_grown(net, first, previous=2 * ETH)
    grown, new = (next(e for e in bad.entries if e.job == j) for j in (J1, J2))
    assert bad.debits[b(net, "requester")] == 2 * ETH  # 1 ETH short
    w = net.client("worker2")
    with reverts("NotAnchorer"):  # not bonded
        w.dispute_previous(1, grown, bad.entry_proof(grown))
    w = watcher(net)
    with reverts("NoConflict"):  # a new line's previous is 0: nothing to show
        w.dispute_previous(1, new, bad.entry_proof(new))
    with reverts("NotInTree"):
        w.dispute_previous(1, replace(grown, previous=ETH), bad.entry_proof(grown))
    w.dispute_previous(1, grown, bad.entry_proof(grown))
    with reverts("AlreadyDisputed"):
        w.dispute_previous(1, grown, bad.entry_proof(grown))
    d = raised(net, bad)
    (o,) = first.entries
    final = (0, o, first.entry_proof(o))
    with refused(f"SumShort(shown={ETH}, owed={2 * ETH})"):
        anchorer.answer_previous(d, grown, final)
    with reverts("NotAnchorer"):  # only the anchorer answers
        w.answer_previous(d, grown, final)
    with reverts("NoDispute"):  # answered by its own call, not answerSum
        anchorer.answer_sum(d, (0, []), [], MultiProof((), (), ()))
    with reverts("NoDispute"):  # not the disputed entry
        anchorer.answer_previous(d, new, final)
    with reverts("NoConflict"):  # another line
        anchorer.answer_previous(d, grown, (0, replace(o, job=J2), first.entry_proof(o)))
    with reverts("NotFinalEpoch"):
        anchorer.answer_previous(d, grown, (5, o, first.entry_proof(o)))
    with reverts("NotInTree"):
        anchorer.answer_previous(d, grown, (0, replace(o, amount=2 * ETH), first.entry_proof(o)))
    net.chain.advance(WINDOW + 2)
    with reverts("AnswerTimeOver"):
        anchorer.answer_previous(d, grown, final)
    with reverts("WindowClosed"):
        w.dispute_previous(1, new, bad.entry_proof(new))
    before = net.balance(net.addr("sentry2"))
    net.client("other").void_sum(d)  # anyone sends it; the disputer gets the reward
    assert net.client("other").anchor()["state"] == "void"
    assert net.balance(net.addr("sentry2")) - before == ETH // 2
    assert net.client("requester").pool_of()["debited"] == ETH  # epoch 0's alone


def test_an_honest_previous_is_answered_with_the_lines_final_entry(net: Net) -> None:
    anchorer, first = final_first_epoch(net)
    honest = post_grown(net, first, previous=ETH)
    grown = next(e for e in honest.entries if e.job == J1)
    w = watcher(net)
    w.dispute_previous(1, grown, honest.entry_proof(grown))
    d = raised(net, honest)
    (o,) = first.entries
    anchorer.answer_previous(d, grown, (0, o, first.entry_proof(o)))
    assert w.sum_answer_by(d) == ANSWERED
    (row,) = [r for r in epoch_rows(w) if r["epoch"] == 1]  # `settlement epochs`
    assert (row["disputes"], row["sum_disputes"]) == (1, {"previous": 1})
    assert w.sum_disputes(1) == []  # none open
    with reverts("NoDispute"):  # answered stays answered
        anchorer.answer_previous(d, grown, (0, o, first.entry_proof(o)))
    with reverts("AlreadyDisputed"):
        w.dispute_previous(1, grown, honest.entry_proof(grown))
    net.chain.advance(WINDOW + 2)
    anchorer.finalize(1)
    assert w.anchor()["state"] == "final"
    assert w.sum_answers(1) == []  # no entries shown: none were needed


def test_the_entry_itself_does_not_answer_its_previous(net: Net) -> None:
    """J1 (1 ETH final) grows to 3 ETH, its entry naming 3 ETH as ``previous``: it adds nothing,
    so the worker loses 2 ETH. The entry's own amount equals its ``previous``, but only a final
    anchor's entry answers; the pending anchor's own do not."""
    anchorer, first = final_first_epoch(net)
    new = assemble(entries(net, {(J2, T0, "worker"): ETH}), first.lines, first.earnings, FEE)
    (j2,) = new.entries
    nothing = Entry(j2.requester, j2.worker, J1, T0, 3 * ETH, previous=3 * ETH)
    tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in (nothing, j2)])
    bad = replace(new, entries=(nothing, j2), entries_tree=tree)
    anchorer.post_anchor(bad, net.spends(2 * ETH))
    w = watcher(net)
    w.dispute_previous(1, nothing, bad.entry_proof(nothing))
    (d,) = w.sum_disputes(1)
    for at in (1, 2):  # the pending anchor, and one not posted
        with refused(f"NotFinalEpoch(epoch={at})"):
            anchorer.answer_previous(d, nothing, (at, nothing, bad.entry_proof(nothing)))
    net.chain.advance(WINDOW + 2)
    w.void_sum(d)
    assert w.anchor()["state"] == "void"


def test_a_previous_first_shown_by_a_sum_answer_can_be_disputed_in_the_grace(net: Net) -> None:
    """An answer may show entries never gossiped, after the window: their ``previous`` can be
    disputed until the grace the answer opens ends, and no later."""
    anchorer, first = final_first_epoch(net)
    bad = post_grown(net, first, previous=2 * ETH)
    grown = next(e for e in bad.entries if e.job == J1)
    w, worker = watcher(net), b(net, "worker")
    w.dispute_earnings(1, worker, bad.earnings[worker], bad.earnings_proof(worker))
    net.chain.advance(WINDOW - 10)
    (d,) = w.sum_disputes(1)
    a = answer(bad, first.earnings, EARNINGS, worker)
    anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
    assert grown in w.sum_answers(1)[0][2]
    net.chain.advance(20)  # past the window, within the grace
    with reverts("WindowClosed"):  # sum disputes of the leaves are over
        w.dispute_leaves(1)
    w.dispute_previous(1, grown, bad.entry_proof(grown))
    net.chain.advance(WINDOW + 2)
    with reverts("WindowClosed"):  # the grace is over too
        w.dispute_previous(1, next(e for e in bad.entries if e.job == J2), [])
    (p,) = (x for x in w.sum_disputes(1) if x.kind == PREVIOUS)
    w.void_sum(p)
    assert w.anchor()["state"] == "void"
