"""Two anchoring sentries on one real EVM (embedded), each with its own sqlite file: the second
follows the first's epochs from the entries gossiped for them, takes over when the first goes
silent, and anchors only what grew, every leaf and debit to the wei; one that missed an epoch's
entries never anchors again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from consensus.market.messages import TaskRef
from consensus.settlement.epoch import net_shares
from consensus.settlement.messages import EpochEntries
from node.chain.anchorer import Anchorer
from node.chain.backend import Chain
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_settlement_node import REF, fresh_anchorer, voucher

WINDOW_S = 3600  # the fixture's dispute window
OTHER = TaskRef(job_id=b"\x08" * 16, task=0, attempt=0)


def gossip(source: Anchorer, to: Anchorer) -> int:
    """Hands ``to`` the entries messages ``source`` published (as its gossip inbox would)."""
    return sum(to.follower.hear(b) for b in source.net.sent if isinstance(b, EpochEntries))  # type: ignore[attr-defined]


def addr(net: Net, who: str) -> bytes:
    return bytes.fromhex(net.addr(who)[2:])


@asynccontextmanager
async def two_anchorers(tmp: Path) -> AsyncIterator[tuple[Net, Anchorer, Anchorer, Database]]:
    """A funded pool, two staked sentries, each anchorer with its own sqlite file (the second's
    database too, to restart it from)."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    for who in ("sentry1", "sentry2"):
        net.client(who).stake(ETH)
    async with await Database.open(tmp / "1.db") as db1, \
            await Database.open(tmp / "2.db") as db2:  # fmt: skip
        first = await fresh_anchorer(net, db1, net.client("sentry1"))
        second = await fresh_anchorer(net, db2, net.client("sentry2"))
        yield net, first, second, db2


async def first_epoch(net: Net, first: Anchorer, second: Anchorer) -> None:
    """Both hear a 1 ETH voucher; the first anchors it, the second stands by."""
    for anchorer in (first, second):
        assert await anchorer.on_voucher(voucher(net, first.chain.domain, ETH))
    await first.step()
    await second.step()
    assert net.client("other").epoch_count() == 1, "the second posted over the first's epoch"
    assert second.machine is not None and second.machine.state == "idle"


async def test_a_second_anchorer_follows_the_first_and_takes_over_when_it_goes_silent(
    tmp_path: Path,
) -> None:
    async with two_anchorers(tmp_path) as (net, first, standby, db2):
        c = net.client("other")
        await first_epoch(net, first, standby)
        assert gossip(first, standby) == 1
        await standby.step()  # still standing by (the epoch is pending); saved
        second = await fresh_anchorer(net, db2, net.client("sentry2"))  # kill -9: heard is kept
        net.chain.advance(WINDOW_S + 1)
        await second.step()  # the first's epoch is final in all but name: adopted
        assert second.machine is not None and first.machine is not None
        assert first.machine.pending is not None and second.machine.index == 0
        assert second.machine.base_lines == {}, "a line anchored in full is let go..."
        kept = await second.bases.read(list(first.machine.pending.lines))
        assert {e.line: e.amount for e in kept} == first.machine.pending.lines != {}  # ...kept
        assert second.machine.base_earnings == first.machine.pending.earnings
        # The first goes silent. A line grows (1 -> 3 ETH) and a new one comes (1 ETH).
        assert await second.on_voucher(voucher(net, second.chain.domain, 3 * ETH))
        assert await second.on_voucher(voucher(net, second.chain.domain, ETH, ref=OTHER,
                                               worker="worker2"))  # fmt: skip
        await second.step()
        assert c.epoch_count() == 1, "took over before the first was silent for 3 epochs"
        net.chain.advance(10)
        await second.step()
        latest = c.anchor()
        assert (c.epoch_count(), latest["anchorer"]) == (2, net.addr("sentry2"))
        assert latest["total"] == 3 * ETH
        assert c.pool_of(net.addr("requester"))["debited"] == 4 * ETH, "only what grew"
        net.chain.advance(WINDOW_S + 1)
        await second.step()  # final, and paid out by the anchorer
        await second.step()
    fee = c.params()["fee_bps"]
    assert c.earned_of(net.addr("worker")) == net_shares({b"w": 3 * ETH}, fee)[b"w"]
    assert c.earned_of(net.addr("worker2")) == net_shares({b"w": ETH}, fee)[b"w"]


async def test_an_anchorer_that_missed_an_epochs_entries_does_not_anchor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the first epoch's entries (and no anchorer to ask for them) the second cannot
    know which lines it anchored: from its own empty base it would anchor them again and post
    leaves below what workers claimed."""
    async with two_anchorers(tmp_path) as (net, first, second, _):
        c = net.client("other")
        await first_epoch(net, first, second)  # its entries never reach the second
        net.chain.advance(WINDOW_S + 10)
        await second.step()
        assert second.follower.stuck == 0 and "cannot be rebuilt" in caplog.text
        assert await second.on_voucher(voucher(net, second.chain.domain, ETH, ref=OTHER))
        net.chain.advance(60)
        await second.step()
        assert c.epoch_count() == 1 and (await second.status())["stopped_at_epoch"] == 0
        await first.step()  # the first anchors on: only the new line
        assert await first.on_voucher(voucher(net, first.chain.domain, ETH, ref=OTHER))
        await first.step()
    assert (c.epoch_count(), c.anchor()["anchorer"]) == (2, net.addr("sentry1"))
    assert c.pool_of(net.addr("requester"))["debited"] == 2 * ETH
    assert REF != OTHER


async def test_the_silent_anchorers_last_epoch_is_finalized_and_paid_by_the_one_taking_over(
    tmp_path: Path,
) -> None:
    """Nothing new after the first's epoch: the second still finalizes it (so workers can
    claim) and pays it out, once it is its turn."""
    async with two_anchorers(tmp_path) as (net, first, second, _):
        c = net.client("other")
        await first_epoch(net, first, second)
        gossip(first, second)
        net.chain.advance(WINDOW_S + 1)
        await second.step()  # adopted; not its turn yet
        assert c.anchor()["state"] == "pending" and c.earned_of(net.addr("worker")) == 0
        net.chain.advance(10)
        await second.step()
        await second.step()
        assert c.anchor()["state"] == "final" and c.epoch_count() == 1
    fee = c.params()["fee_bps"]
    assert c.earned_of(net.addr("worker")) == net_shares({b"w": ETH}, fee)[b"w"]
