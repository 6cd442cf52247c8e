"""An epoch whose earnings tree is not the sorted one, followed from its leaves shown on chain
(embedded EVM, the node's services, one sqlite file per node).

The contract checks the order of the leaves within each part it is shown, not across parts:
an anchorer may post the right leaves paired otherwise (or with a lower duplicate leaf), and
nothing voids it for that. No standing-by anchorer could rebuild such an epoch from its
entries, so all of them halted behind it. Now the epoch is followed when the leaves shown for
it hash to its root and give every worker exactly the earnings its entries make; proofs of a
worker's leaf in it (a base leaf in a void or an answer) are read off the parts as shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from consensus.settlement.audits import EARNINGS, LEAVES
from consensus.settlement.epoch import Epoch, assemble
from node.chain.anchorer import Anchorer
from tests.chain.conftest import ETH, Net
from tests.chain.test_audits_node import WINDOW, followed_first_epoch, hand
from tests.chain.test_epochs import FEE, J2, J3, T0, b, entries, with_earnings
from tests.chain.test_settlement_node import voucher
from tests.unit.settlement.test_shown_leaves import paired_otherwise

J4 = b"\x44" * 32


@asynccontextmanager
async def followed_paired_otherwise(tmp: Path) -> AsyncIterator[tuple[Net, Anchorer, Epoch]]:
    """After epoch 0 (worker 1 ETH), the cheat posts epoch 1 (worker2, sentry3 and other earn
    1 ETH each) with its four leaves paired otherwise, gossips its entries, not its leaves;
    the standby demands them, the cheat shows them in two parts, and the epoch becomes final.
    The standby follows it."""
    async with followed_first_epoch(tmp) as (net, standby, first):
        cheat = net.client("sentry1")
        lines = {(J2, T0, "worker2"): ETH, (J3, T0, "sentry3"): ETH, (J4, T0, "other"): ETH}
        honest = assemble(entries(net, lines), first.lines, first.earnings, FEE)
        tree, shown = paired_otherwise(honest.earnings)
        assert tree.root != honest.earnings_tree.root
        cheat.post_anchor(replace(honest, earnings_tree=tree), net.spends(4 * ETH))
        hand(standby, 1, honest, leaves=False)
        await standby.step()  # listening for the leaves
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        (d,) = cheat.sum_disputes(1)
        assert d.kind == LEAVES
        for part in range(len(shown.nodes)):
            cheat.answer_leaves(1, shown, part)
        await standby.step()  # audits the leaves shown: nothing to raise
        assert standby.auditor.raised == 1
        net.chain.advance(2 * WINDOW + 2)
        cheat.finalize(1)
        for _ in range(2):  # stuck at first (the sorted tree is not the root), then follows
            await standby.step()
        m = standby.machine
        assert m is not None and (m.index, standby.follower.stuck) == (1, None)
        assert m.base_earnings == honest.earnings
        yield net, standby, honest


async def test_a_standby_voids_a_cut_leaf_proving_the_base_off_the_parts_shown(
    tmp_path: Path,
) -> None:
    """The cheat's next epoch cuts worker's leaf (its base, held in the tree paired
    otherwise) to a wei: the standby voids it at once, with worker's base leaf proved off the
    parts shown (the sorted tree's proof is not the root's)."""
    async with followed_paired_otherwise(tmp_path) as (net, standby, honest):
        w = b(net, "worker")
        second = assemble(entries(net, {(J2, T0, "worker2"): 2 * ETH}), honest.lines,
                          honest.earnings, FEE)  # fmt: skip
        bad = with_earnings(second, {**second.earnings, w: 1})
        net.client("sentry1").post_anchor(bad, net.spends(5 * ETH))
        hand(standby, 2, bad)
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 2  # the demand, the void


async def test_the_standby_anchors_on_it_and_answers_with_base_leaves_off_the_parts(
    tmp_path: Path,
) -> None:
    """The cheat goes quiet; the standby takes over, pays out the epoch it followed (its
    multiproofs built off the parts shown), anchors worker's new voucher over that tree, and
    answers a dispute of worker's leaf with its base leaf proved off the parts."""
    async with followed_paired_otherwise(tmp_path) as (net, standby, honest):
        w = b(net, "worker")
        assert await standby.on_voucher(voucher(net, standby.chain.domain, ETH))
        net.chain.advance(WINDOW + 10)  # the cheat silent for takeover's epochs and a window
        await standby.step()
        m = standby.machine
        assert m is not None and m.pending is not None and m.index == 2
        assert m.pending.earnings[w] > honest.earnings[w]
        cheat = net.client("sentry1")  # bonded: it may dispute a leaf
        cheat.dispute_earnings(2, w, m.pending.earnings[w], m.pending.earnings_proof(w))
        await standby.step()
        assert cheat.sum_disputes(2) == [] and standby.sums.answered == 1
        (kind, party, shown, _proof), *_ = cheat.sum_answers(2)
        assert (kind, party, len(shown)) == (EARNINGS, w, 1)
        # Its turn, so it paid out the epoch it followed, with multiproofs off the parts.
        assert cheat.earned_by(list(honest.earnings)) == honest.earnings
        assert standby.payer.paid == len(honest.earnings)
