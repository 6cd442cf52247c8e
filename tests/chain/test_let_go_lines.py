"""The anchoring sentry keeps only open lines in memory (``Anchoring.settle``,
``node/chain/line_bases.py``): a line anchored in full is written to sqlite and let go, and a
voucher naming it again, after a restart too, adds only what grew. Real EVM (embedded), real
sqlite file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from consensus.envelope import new_nonce
from consensus.market.messages import TaskRef
from consensus.settlement.epoch import assemble
from consensus.settlement.messages import EpochEntries, entries_parts
from node.chain.anchorer import Anchorer
from storage.db import Database
from tests.chain.conftest import ETH, Net
from tests.chain.test_epoch_history import funded, late
from tests.chain.test_following import first_epoch, gossip, two_anchorers
from tests.chain.test_settlement_node import REF, fresh_anchorer, voucher

WINDOW_S = 3600  # the fixture's dispute window


def ref(i: int) -> TaskRef:
    return TaskRef(job_id=bytes([i + 1]) * 16, task=0, attempt=0)


def voucher_line(net: Net, anchorer: Anchorer) -> tuple[bytes, bytes, bytes]:
    """The line of ``voucher(net, ...)`` (``REF``, the fixture's worker)."""
    return voucher(net, anchorer.chain.domain, 1, ref=REF).entry().line


async def anchor_final(net: Net, anchorer: Anchorer) -> None:
    """Posts what is due, lets the window pass, and takes the epoch as final."""
    net.chain.advance(2)
    await anchorer.step()
    assert anchorer.machine is not None and anchorer.machine.state == "pending"
    net.chain.advance(WINDOW_S + 1)
    await anchorer.step()


async def saved_bytes(db: Database) -> int:
    row = await db.query_one("SELECT length(state) AS n FROM settle_anchoring WHERE id = 1")
    assert row is not None
    return int(row["n"])


async def test_a_line_let_go_is_paid_once_and_then_only_what_grew(tmp_path: Path) -> None:
    net = funded()
    sentry = net.client("sentry1")
    async with await Database.open(tmp_path / "node.db") as db:
        first = await fresh_anchorer(net, db, sentry)
        assert await first.on_voucher(voucher(net, sentry.domain, ETH, ref=ref(0)))
        await anchor_final(net, first)
        assert first.machine is not None and first.machine.latest == {}, "not let go"
        again = await fresh_anchorer(net, db, sentry)  # a restart: only sqlite is left
        assert not await again.on_voucher(voucher(net, sentry.domain, ETH, ref=ref(0)))
        assert await again.on_voucher(voucher(net, sentry.domain, 3 * ETH, ref=ref(0)))
        await anchor_final(net, again)
    pool = net.client("other").pool_of(net.addr("requester"))
    assert pool["debited"] == 3 * ETH, "the line was paid again from 0"


async def test_the_saved_state_does_not_grow_with_the_lines_anchored(tmp_path: Path) -> None:
    net = funded()
    sentry = net.client("sentry1")
    sizes = []
    async with await Database.open(tmp_path / "node.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry)
        for round_ in range(3):
            for i in range(12):
                v = voucher(net, sentry.domain, ETH // 100, ref=ref(12 * round_ + i))
                assert await anchorer.on_voucher(v)
            await anchor_final(net, anchorer)
            sizes.append(await saved_bytes(db))
        assert anchorer.machine is not None and anchorer.machine.latest == {}
    assert max(sizes) < min(sizes) + 512, f"saved state grew with the lines: {sizes}"


async def test_a_standby_follows_an_epoch_that_grows_a_line_it_let_go(tmp_path: Path) -> None:
    """The entries of another anchorer's epoch are rebuilt over the bases of the lines they
    name: a line let go comes back from sqlite (from 0 the roots would differ: stuck)."""
    async with two_anchorers(tmp_path) as (net, first, second, _):
        await first_epoch(net, first, second)
        gossip(first, second)
        net.chain.advance(WINDOW_S + 1)
        await first.step()
        await second.step()  # epoch 0 adopted, its line let go
        assert second.machine is not None and second.machine.index == 0
        assert second.machine.latest == {}
        assert await first.on_voucher(voucher(net, first.chain.domain, 3 * ETH))
        await first.step()  # epoch 1: the line grown, previous 1 ETH
        assert net.client("other").epoch_count() == 2
        gossip(first, second)  # the second never heard the 3 ETH voucher
        net.chain.advance(WINDOW_S + 1)
        await first.step()
        await second.step()
        assert second.follower.stuck is None and second.machine.index == 1
        kept = await second.bases.read([voucher_line(net, second)])
        assert [e.amount for e in kept] == [3 * ETH]


async def test_an_epoch_fetched_from_history_is_rebuilt_over_lines_let_go(tmp_path: Path) -> None:
    net = funded()
    async with await Database.open(tmp_path / "1.db") as db1, \
            await Database.open(tmp_path / "2.db") as db2:  # fmt: skip
        first = await fresh_anchorer(net, db1, net.client("sentry1"))
        assert await first.on_voucher(voucher(net, first.chain.domain, ETH))
        await anchor_final(net, first)
        second = await late(net, db2, first)
        await second.step()  # epoch 0 from the first's history; its line let go
        assert second.machine is not None and second.machine.index == 0
        assert second.machine.latest == {}
        assert await first.on_voucher(voucher(net, first.chain.domain, 2 * ETH))
        await anchor_final(net, first)  # epoch 1, never gossiped to the second
        await second.step()
        assert second.follower.stuck is None and second.machine.index == 1


async def test_a_busy_anchorer_lets_lines_go_as_it_posts_the_next_epoch(tmp_path: Path) -> None:
    """With something new every epoch, the step that makes an epoch final also posts the
    next: the machine is never idle, and lines must go all the same."""
    net = funded()
    sentry = net.client("sentry1")
    async with await Database.open(tmp_path / "node.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH // 10, ref=ref(0)))
        await anchorer.step()
        for i in range(1, 4):
            assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH // 10, ref=ref(i)))
            net.chain.advance(WINDOW_S + 1)
            await anchorer.step()  # epoch i - 1 final, epoch i posted
            m = anchorer.machine
            assert m is not None and m.state == "pending" and m.index == i
            assert len(m.latest) == 1, "the final epoch's line was not let go"
    assert net.client("other").pool_of(net.addr("requester"))["debited"] == 4 * ETH // 10


async def test_a_voucher_taken_while_its_line_is_let_go_adds_only_what_grew(
    tmp_path: Path,
) -> None:
    """The voucher's line is restored, then its exclusion is asked (a sqlite read): a step
    making the line's epoch final and letting lines go waits for it, or the line would be
    updated from no base and paid again from 0."""
    net = funded()
    sentry = net.client("sentry1")
    async with await Database.open(tmp_path / "node.db") as db:
        a = await fresh_anchorer(net, db, sentry)
        assert await a.on_voucher(voucher(net, sentry.domain, ETH))
        net.chain.advance(2)
        await a.step()  # epoch 0 pending: 1 ETH
        asked, answer = trio.Event(), trio.Event()
        real_excluded = a.chain.excluded

        async def slow_excluded(ref: TaskRef) -> bool:
            if not asked.is_set():  # the voucher's ask; the step's own asks are answered
                asked.set()
                await answer.wait()
            return await real_excluded(ref)

        a.chain.excluded = slow_excluded  # type: ignore[method-assign]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.on_voucher, voucher(net, sentry.domain, 3 * ETH))
                await asked.wait()
                net.chain.advance(WINDOW_S + 1)
                nursery.start_soon(a.step)  # epoch 0 final: its line would be let go now
                while a.bases.lock.statistics().tasks_waiting == 0:
                    await trio.testing.wait_all_tasks_blocked()
                answer.set()
        a.chain.excluded = real_excluded  # type: ignore[method-assign]
        await anchor_final(net, a)
    assert net.client("other").pool_of(net.addr("requester"))["debited"] == 3 * ETH


async def test_entries_under_a_made_up_root_bring_no_line_back(tmp_path: Path) -> None:
    """Any peer may gossip entries of a root no anchor has: they name lines let go, which
    must stay in sqlite (back in memory they would be saved at every step)."""
    net = funded()
    sentry = net.client("sentry1")
    async with await Database.open(tmp_path / "node.db") as db:
        a = await fresh_anchorer(net, db, sentry)
        lines = []
        for i in range(12):
            v = voucher(net, sentry.domain, ETH // 1000, ref=ref(i))
            assert await a.on_voucher(v)
            lines.append(v.entry())
        await anchor_final(net, a)
        grown = [replace(e, amount=e.amount + 1) for e in lines]
        fake = assemble(grown, {}, {}, 0)
        for requester, part, parts, rows in entries_parts(fake, {}):
            a.follower.hear(EpochEntries(
                expires_ms=2**40, nonce=new_nonce(), index=10**9, requester=requester,
                entries_root=fake.entries_tree.root, part=part, parts=parts, rows=rows,
            ), "anyone")  # fmt: skip
        net.chain.advance(2)
        await a.step()
        assert a.machine is not None and a.machine.latest == {}
