"""An entry's ``previous`` through the node's services on a real EVM (embedded), one sqlite file
per node: a standing-by anchorer disputes a ``previous`` above the line's amount in its base,
heard on gossip, first shown by a sum answer, or withheld and shown on its demand for the
entries, and voids the anchor when nothing answers, but raises nothing on an honest one; the
anchoring sentry answers a dispute of an honest one with the line's final entry from its
epoch history, and a demand for its entries with them all, even after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from consensus.settlement.audits import ENTRIES, PREVIOUS, answer
from consensus.settlement.epoch import assemble
from consensus.settlement.merkle import ENTRY_TYPES, MerkleTree
from consensus.settlement.shown import ShownEntries
from node.chain.anchorer import Anchorer
from node.chain.backend import Chain
from node.chain.client import Settlement
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_audits_node import WINDOW, earnings_dispute, followed_first_epoch, hand
from tests.chain.test_epochs import FEE, J1, J2, T0, entries
from tests.chain.test_settlement_node import fresh_anchorer, voucher


async def test_a_standing_by_anchorer_voids_an_anchor_that_underpays_a_line(
    tmp_path: Path,
) -> None:
    """J1 (1 ETH final) grows to 3 ETH, but its entry says it had 2 ETH: worker is paid 1 ETH
    for a voucher that adds 2, and the requester debited 1 ETH less. Entries and leaves agree
    with each other, so only the line's history shows it."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        line = (J1, T0, bytes.fromhex(net.addr("worker")[2:]))
        grown = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}
        bad = assemble(entries(net, grown), {line: 2 * ETH}, first.earnings, FEE)
        net.client("sentry1").post_anchor(bad, net.spends(4 * ETH))
        hand(standby, 1, bad)
        await standby.step()
        (d,) = net.client("other").sum_disputes(1)
        assert d.kind == PREVIOUS
        await standby.step()  # raised once
        assert standby.auditor.raised == 1
        before = net.balance(net.addr("sentry2"))
        net.chain.advance(WINDOW + 2)
        await standby.step()  # nothing answered it
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 2
        gained = net.balance(net.addr("sentry2")) - before
        assert ETH // 2 - gained < ETH // 100  # half the cheat's bond, less gas
        assert net.client("requester").pool_of()["debited"] == ETH  # epoch 0's alone


async def test_a_standing_by_anchorer_raises_nothing_on_an_honest_grown_line(
    tmp_path: Path,
) -> None:
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        grown = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}
        honest = assemble(entries(net, grown), first.lines, first.earnings, FEE)
        assert sorted(e.previous for e in honest.entries) == [0, ETH]
        net.client("sentry1").post_anchor(honest, net.spends(4 * ETH))
        hand(standby, 1, honest)
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        assert net.client("other").sum_disputes(1, answered=True) == []
        assert standby.auditor.raised == 0


async def test_a_standing_by_anchorer_disputes_a_previous_first_shown_in_an_answer(
    tmp_path: Path,
) -> None:
    """The same underpaid line, its entry withheld from gossip: past half the window worker's
    leaf looks grown with no entries, so it is disputed; the cheat's answer shows the entry,
    whose ``previous`` is then disputed, and nothing answers that."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        line = (J1, T0, bytes.fromhex(net.addr("worker")[2:]))
        grown = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}
        bad = assemble(entries(net, grown), {line: 2 * ETH}, first.earnings, FEE)
        cheat = net.client("sentry1")
        cheat.post_anchor(bad, net.spends(4 * ETH))
        hand(standby, 1, replace(bad, entries=tuple(e for e in bad.entries if e.job == J2)))
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        d = earnings_dispute(net, line[2])
        a = answer(bad, first.earnings, d.kind, d.party)
        cheat.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
        await standby.step()
        assert {p.kind for p in cheat.sum_disputes(1)} == {ENTRIES, PREVIOUS}
        net.chain.advance(WINDOW + 2)
        await standby.step()
        assert cheat.anchor()["state"] == "void"
        assert standby.auditor.raised == 4  # the leaf, the entries, the previous, the void


async def test_an_honest_previous_first_shown_in_an_answer_is_not_disputed(
    tmp_path: Path,
) -> None:
    """The honest grown line, its entry withheld: the standby let the line go when epoch 0
    was final, so the answer's entry is checked against the line's base brought back from
    sqlite (node/chain/line_bases.py), not against nothing."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        assert standby.machine is not None and standby.machine.latest == {}, "not let go"
        grown = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}
        honest = assemble(entries(net, grown), first.lines, first.earnings, FEE)
        anchorer = net.client("sentry1")
        anchorer.post_anchor(honest, net.spends(4 * ETH))
        hand(standby, 1, replace(honest, entries=tuple(e for e in honest.entries if e.job == J2)))
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        d = earnings_dispute(net, bytes.fromhex(net.addr("worker")[2:]))
        a = answer(honest, first.earnings, d.kind, d.party)
        anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
        anchorer.answer_entries(1, ShownEntries.of_rows(honest.entries), 0)
        await standby.step()
        assert anchorer.sum_disputes(1) == [] and standby.auditor.raised == 2  # the leaf, entries
        net.chain.advance(WINDOW + 2)
        await standby.step()
        assert anchorer.sum_disputes(1) == [] and standby.auditor.raised == 2


@asynccontextmanager
async def anchoring(tmp: Path) -> AsyncIterator[tuple[Net, Settlement, Database, Anchorer]]:
    """A funded requester, the anchoring sentry (sentry1) on its sqlite file, and a bonded
    watcher ("other")."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    other = net.client("other")
    other.stake(ETH)
    async with await Database.open(tmp / "sentry.db") as db:
        yield net, other, db, await fresh_anchorer(net, db, net.client("sentry1"))


async def test_the_anchorer_answers_a_dispute_of_an_honest_previous(tmp_path: Path) -> None:
    """Epoch 0 anchors J1 at 1 ETH, epoch 1 grows it to 3 ETH (``previous`` 1 ETH). A bonded
    watcher disputes that ``previous`` anyway; the anchorer, restarted from its sqlite file,
    shows epoch 0's entry, and the anchor becomes final."""
    async with anchoring(tmp_path) as (net, other, db, a):
        for amount in (ETH, 3 * ETH):
            assert await a.on_voucher(voucher(net, a.chain.domain, amount))
            await a.step()
            net.chain.advance(WINDOW // 2 + 2)
            await a.step()  # the first epoch becomes final as the second is posted
        assert a.machine is not None and a.machine.pending is not None
        (e,) = a.machine.pending.entries
        assert (other.anchor()["epoch"], e.previous) == (1, ETH)
        other.dispute_previous(1, e, a.machine.pending.entry_proof(e))
        restarted = Anchorer(a.chain, db, a.net)
        await restarted.resume()
        await restarted.step()
        assert other.sum_disputes(1) == []
        assert restarted.sums.answered == 1
        net.chain.advance(WINDOW + 1)
        await restarted.step()
        assert other.anchor()["state"] == "final"
        assert net.client("sentry1").stake_of()["bonded"] == ETH


async def test_a_standing_by_anchorer_demands_withheld_entries_and_voids_a_raised_previous(
    tmp_path: Path,
) -> None:
    """J1 (1 ETH final) has a 3 ETH voucher, and its entry names 3 ETH as its ``previous``: it
    adds nothing, so every leaf agrees with the entries gossiped (J2's alone) and no sum
    dispute brings the withheld one out, yet J1's final amount would jump to 3 ETH and worker
    never be paid 2 ETH of its voucher. Past half the window the standby demands the
    entries; the cheat must show them, and the raised ``previous`` is disputed and voided."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        line = (J1, T0, bytes.fromhex(net.addr("worker")[2:]))
        grown = entries(net, {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH})
        honest = assemble(grown, {line: 3 * ETH}, first.earnings, FEE)  # J1 left out
        kept = (*honest.entries, replace(grown[0], previous=3 * ETH))
        bad = replace(honest, entries=kept,
                      entries_tree=MerkleTree.of(ENTRY_TYPES, [e.row() for e in kept]))  # fmt: skip
        cheat = net.client("sentry1")
        cheat.post_anchor(bad, net.spends(4 * ETH))
        hand(standby, 1, replace(bad, entries=honest.entries))  # the J1 entry withheld
        await standby.step()
        assert cheat.sum_disputes(1) == []  # gossip may still come
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        (d,) = cheat.sum_disputes(1)
        assert (d.kind, standby.auditor.raised) == (ENTRIES, 1)  # no leaf looks wrong
        cheat.answer_entries(1, ShownEntries.of_rows(bad.entries), 0)
        await standby.step()
        (p,) = cheat.sum_disputes(1)
        assert p.kind == PREVIOUS and p.amount == int.from_bytes(kept[-1].leaf())
        net.chain.advance(WINDOW + 2)
        await standby.step()
        assert cheat.anchor()["state"] == "void"
        assert standby.auditor.raised == 3  # the entries, the previous, the void
        assert net.client("requester").pool_of()["debited"] == ETH  # epoch 0's alone


async def test_the_anchorer_shows_its_entries_on_demand(tmp_path: Path) -> None:
    """A bonded watcher demands an honest epoch's entries; the anchoring sentry, restarted
    from its sqlite file, shows every one, and the anchor becomes final."""
    async with anchoring(tmp_path) as (net, other, db, a):
        assert await a.on_voucher(voucher(net, a.chain.domain, ETH))
        await a.step()
        assert a.machine is not None and a.machine.pending is not None
        pending = a.machine.pending
        other.dispute_entries(0)
        restarted = Anchorer(a.chain, db, a.net)
        await restarted.resume()
        await restarted.step()
        assert other.sum_disputes(0) == [] and restarted.sums.answered == 1
        assert other.entries_shown(0) == ShownEntries.of_rows(pending.entries)
        net.chain.advance(WINDOW + 1)
        await restarted.step()
        assert other.anchor()["state"] == "final"
