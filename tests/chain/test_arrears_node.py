"""A worker's watch on requesters that leave its lines unanchored, on a real EVM with a real
sqlite file: anchors while a task may still wait for its verdict do not count; then anchors
that never debit our requester put it in arrears (the bidder is told, by peer and address), a
restart judges the same from sqlite, and its next debit clears it."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.market.messages import TaskRef
from node.chain.backend import Chain
from node.chain.payee import Payee
from storage.db import Database
from tests.chain.conftest import ETH, make_net
from tests.chain.test_settlement_node import StubNet, fresh_anchorer, node_of, voucher

REF = TaskRef(job_id=b"\x07" * 16, task=0, attempt=0)
HOLD_MS = 60_000  # verify.verdict_timeout_ms: anchorers may hold a task back this long


class ClockedNet(StubNet):
    """Time set by the test: the hold for a verdict passes without waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.at = 10**6

    def now_ms(self) -> int:
        return self.at


async def test_a_requester_no_anchor_debits_is_declined_until_one_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = make_net(Chain.embedded())
    for requester in ("requester", "other"):
        net.client(requester).fund(10 * ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    worker = net.client("worker")
    chain = node_of(net, "worker", worker, arrears_anchors=2)
    await chain.service.start()
    told: list[dict[str, str]] = []
    ours = net.addr("requester").lower()
    async with (
        await Database.open(tmp_path / "worker.db") as db,
        await Database.open(tmp_path / "sentry.db") as sentry_db,
    ):
        clock = ClockedNet()
        payee = Payee(chain, db, clock, HOLD_MS)  # type: ignore[arg-type]
        payee.arrears.on_change = told.append
        mine = voucher(net, worker.domain, ETH)
        await payee.keep(REF, net.addr("requester"), ETH, mine.signature, mine.spend(),
                         peer="req-peer")  # fmt: skip
        assert await payee.arrears.step() == {}  # running: its snapshot is taken
        await payee.ended(REF)

        anchorer = await fresh_anchorer(net, sentry_db, sentry)

        async def anchor_others(task: int) -> None:
            """One anchor, final, of another requester's line (ours never reached it)."""
            ref = TaskRef(job_id=b"\x09" * 16, task=task, attempt=0)
            other = voucher(net, sentry.domain, ETH, ref=ref, worker="worker2",
                            requester="other", spend=(task + 1) * ETH)  # fmt: skip
            assert await anchorer.on_voucher(other)
            net.chain.advance(2)
            await anchorer.step()
            net.chain.advance(3601)
            await anchorer.step()

        await anchor_others(0)
        await anchor_others(1)
        clock.at += HOLD_MS // 2
        assert await payee.arrears.step() == {}, "two anchors, but the verdict may be pending"
        clock.at += HOLD_MS
        await anchor_others(2)
        assert await payee.arrears.step() == {}, "one anchor since the hold: within patience"
        await anchor_others(3)
        found = await payee.arrears.step()
        assert list(found) == [ours] and found[ours].waiting_wei == ETH
        assert told == [{ours: found[ours].reason(), "req-peer": found[ours].reason()}]
        assert caplog.text.count("declining a requester's work") == 1
        assert (await payee.status())["arrears"][0]["requester"] == ours

        again = Payee(chain, db, clock, HOLD_MS)  # type: ignore[arg-type]  # a restart
        assert list(await again.arrears.step()) == [ours]

        assert await anchorer.on_voucher(mine)  # now the anchorer has our line
        net.chain.advance(2)
        await anchorer.step()
        assert await payee.arrears.step() == {}
        assert told[-1] == {}, "the bidder takes its work again"
    assert sentry.pool_of(net.addr("requester"))["debited"] == ETH
