"""Earnings leaves through the node's services on the embedded EVM: a standing-by sentry
demands leaves that were not gossiped (once it has listened a while), audits those shown, and
voids an anchor that leaves out a worker it owes; a worker claims from leaves shown on chain."""

from __future__ import annotations

from pathlib import Path

from consensus.settlement.audits import EARNINGS
from consensus.settlement.epoch import assemble
from consensus.settlement.shown import ShownLeaves
from node.chain.backend import Chain
from node.chain.payee import Payee
from storage.db import Database
from tests.chain.conftest import ETH, make_net
from tests.chain.test_audits_node import WINDOW, followed_first_epoch, hand
from tests.chain.test_epochs import FEE, J2, T0, b, entries
from tests.chain.test_leaves_dispute import (
    leaves_dispute,
    post_from_nowhere,
    post_leaving_out,
    show_all,
)
from tests.chain.test_settlement_node import StubNet, node_of


async def test_a_standing_by_anchorer_demands_withheld_leaves_and_voids_a_leaf_from_nowhere(
    tmp_path: Path,
) -> None:
    """The cheat gossips its entries but not its leaves, one of which credits a colluder that
    has no entry. Past half the window the standby demands the leaves; the cheat shows them
    (or would be voided for not), the standby reads them off the events and disputes the
    colluder's leaf, which no entries answer, and voids the anchor when the answer time ends."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        cheat, watch = net.client("sentry1"), net.client("other")
        bad = post_from_nowhere(net, cheat, first)
        hand(standby, 1, bad, leaves=False)
        await standby.step()
        assert watch.sum_disputes(1) == [], "demanded before half the window"
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        d = leaves_dispute(net)
        await standby.step()  # demanded once
        assert watch.sum_disputes(1) == [d]
        show_all(cheat, 1, ShownLeaves.of_rows(bad.earnings.items()))
        await standby.step()
        (e,) = watch.sum_disputes(1)
        assert (e.kind, e.party, e.amount) == (EARNINGS, b(net, "worker2"), ETH)
        net.chain.advance(WINDOW + 1)
        await standby.step()
        assert watch.anchor()["state"] == "void"
        assert standby.auditor.raised == 3  # the demand, the dispute, the void
        assert cheat.stake_of()["bonded"] == 0


async def test_a_standby_that_just_began_listening_waits_before_demanding_leaves(
    tmp_path: Path,
) -> None:
    """Leaves gossiped before we listened (a restart) are not the anchorer's fault: a quarter
    window of listening first."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        bad = post_from_nowhere(net, net.client("sentry1"), first)
        hand(standby, 1, bad, leaves=False)
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()  # the first look, past half the window
        assert net.client("other").sum_disputes(1) == []
        net.chain.advance(WINDOW // 4 - 60)
        await standby.step()
        assert net.client("other").sum_disputes(1) == []
        net.chain.advance(120)
        await standby.step()
        leaves_dispute(net)


async def test_a_standing_by_anchorer_voids_an_anchor_that_leaves_a_worker_out(
    tmp_path: Path,
) -> None:
    """The cheat gossips its entries and its leaves, which leave out worker2 though its entry
    pays it: the standby shows the leaves without it and voids at once (no demand: the
    contract hashes the gossiped leaves itself)."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        cheat, watch = net.client("sentry1"), net.client("other")
        post = post_leaving_out(net, cheat, first, "worker2")
        hand(standby, 1, post)
        await standby.step()
        assert watch.anchor()["state"] == "void"
        assert watch.sum_disputes(1) == []
        assert standby.auditor.raised == 2  # the one part shown without it, the void


async def test_a_standby_does_not_demand_leaves_another_watcher_demanded(
    tmp_path: Path,
) -> None:
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        bad = post_from_nowhere(net, net.client("sentry1"), first)
        hand(standby, 1, bad, leaves=False)
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        net.client("other").stake(ETH)
        net.client("other").dispute_leaves(1)
        await standby.step()
        assert standby.auditor.raised == 0
        leaves_dispute(net)


async def test_a_worker_claims_from_leaves_shown_on_chain_when_none_were_gossiped(
    tmp_path: Path,
) -> None:
    """The anchorer gossips no leaves; a watcher demands them and the anchorer shows them. Once
    final, the worker (its node heard no leaves) claims with the leaves read off the events."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    anchorer, watcher, worker = (net.client(who) for who in ("sentry1", "sentry2", "worker"))
    anchorer.stake(ETH)
    watcher.stake(ETH)
    epoch = assemble(entries(net, {(J2, T0, "worker"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(epoch, net.spends(ETH))
    watcher.dispute_leaves(0)
    show_all(anchorer, 0, ShownLeaves.of_rows(epoch.earnings.items()))
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        refused = await payee.claim()
        assert refused["claimed"] is False, "nothing final yet"
        net.chain.advance(WINDOW + 1)
        anchorer.finalize(0)
        done = await payee.claim()
    assert done["claimed"] is True and done["epoch"] == 0
    assert worker.earned_of() == ETH - ETH // 100


async def test_a_standby_voids_an_anchor_that_cuts_an_idle_workers_leaf(tmp_path: Path) -> None:
    """worker earned nothing this epoch, so no entry speaks for it; its leaf cut to a wei is
    still below its leaf in the last final root (a leaf never shrinks): voided at once."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        cheat = net.client("sentry1")
        hand(standby, 1, post_leaving_out(net, cheat, first, "worker", at=1))
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 1
