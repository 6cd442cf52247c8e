"""The daemon's settlement parts on a real EVM with a real sqlite file: the anchorer survives a
crash at either side of its post exactly once, and escrow waits out a chain outage."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio

from config.schema import ChainSettings
from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import Body, Wei
from consensus.market.messages import TaskRef, Voucher
from consensus.settlement.leaves import LeavesAssembly
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import (
    EntryRow,
    EpochEntries,
    EpochLeaves,
    SettledVoucher,
    VoucherCap,
    entry_of,
)
from node.chain import artifacts
from node.chain.anchorer import Anchorer
from node.chain.backend import Chain
from node.chain.caps import Caps
from node.chain.client import Settlement
from node.chain.errors import ChainUnavailable
from node.chain.escrow import Escrow
from node.chain.hook import SettlementHook
from node.chain.journal import Journal
from node.chain.node import ChainNode
from node.chain.payee import Payee
from node.chain.payout import Payer
from node.chain.service import ChainService
from node.chain.signing import check_cap, sign_voucher, spend_signer
from node.chain.spending import SpendBook
from storage.db import Database
from tests.chain.conftest import ETH, Anvil, Net, make_net

REF = TaskRef(job_id=b"\x07" * 16, task=0, attempt=0)


class Crash(Exception):
    """Stands for kill -9 at that line: nothing after it runs."""


class StubNet:
    """The anchorer's network: gossip it sends is recorded; time is the wall clock."""

    peer_id = "sentry"

    def __init__(self) -> None:
        self.sent: list[Body] = []

    def now_ms(self) -> int:
        return int(trio.current_time() * 1000)

    async def publish(self, topic: str, body: Body) -> None:
        self.sent.append(body)


def node_of(net: Net, who: str, client: Settlement, **settings: Any) -> ChainNode:
    service = ChainService(lambda: client, retry_base_s=0.05)
    s = ChainSettings(backend="rpc", settle=True, epoch_s=1, poll_s=1, **settings)
    return ChainNode(service, s, client.address, client.domain,
                     SettlementHook(client.domain, net.keys[who]))  # fmt: skip


def voucher(
    net: Net, domain: Any, amount: int, signed: int | None = None, *, ref: TaskRef = REF,
    worker: str = "worker", spend: int = 50 * ETH, requester: str = "requester",
) -> SettledVoucher:  # fmt: skip
    payee = bytes.fromhex(net.addr(worker)[2:])
    twin = chain_voucher_for(ref, payee, amount if signed is None else signed)
    sig = sign_voucher(net.keys[requester], domain, twin)
    signed_spend = net.spend(requester, spend)  # all the requester vouched, anywhere
    return SettledVoucher(
        expires_ms=2**40, nonce=new_nonce(), ref=ref, worker=payee, amount_wei=Wei(amount),
        requester=signed_spend.requester, signature=sig, spend_wei=Wei(spend),
        spend_sig=signed_spend.signature,
    )  # fmt: skip


async def fresh_anchorer(net: Net, db: Database, client: Settlement, **settings: Any) -> Anchorer:
    node = node_of(net, "sentry1", client, **settings)
    anchorer = Anchorer(node, db, StubNet())  # type: ignore[arg-type]
    await anchorer.chain.service.start()
    await anchorer.resume()
    return anchorer


@pytest.mark.parametrize("crash_at", ["before_send", "after_mined"])
async def test_a_crash_around_the_post_anchors_the_epoch_exactly_once(
    crash_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    async with await Database.open(tmp_path / "node.db") as db:
        first = await fresh_anchorer(net, db, sentry)
        forged = voucher(net, sentry.domain, 3 * ETH, signed=ETH)
        assert not await first.on_voucher(forged), "the requester signed less than that"
        assert await first.on_voucher(voucher(net, sentry.domain, ETH))
        real_post = Settlement.post_anchor

        def crashing_post(self: Settlement, epoch: Any, spends: Any) -> Any:
            if crash_at == "after_mined":
                real_post(self, epoch, spends)
            raise Crash

        monkeypatch.setattr(Settlement, "post_anchor", crashing_post)
        with pytest.raises(Crash):
            await first.step()
        monkeypatch.setattr(Settlement, "post_anchor", real_post)
        second = await fresh_anchorer(net, db, sentry)  # the restart
        assert second.machine is not None and first.machine is not None
        assert second.machine.spends == first.machine.spends != {}  # saved with the state
        net.chain.advance(2)  # a post that never left is posted again the next epoch
        await second.step()
        assert second.machine.state == "pending"
        net.chain.advance(3601)  # the dispute window
        await second.step()
        assert sentry.anchor()["state"] == "final"
        assert len(sentry.contract.events.Anchored().get_logs(from_block=0)) == 1
        leaves = [b for b in second.net.sent if isinstance(b, EpochLeaves)]  # type: ignore[attr-defined]
        whole = LeavesAssembly.first(leaves[-1]).add(leaves[-1])
        assert whole is not None
        assert whole.earnings_root == bytes(sentry.contract.functions.claimRoot().call())
        assert list(whole.amounts.values()) == [ETH - ETH // 100]


async def test_a_worker_claims_from_leaves_in_parts_despite_a_forged_part(
    tmp_path: Path,
) -> None:
    """Earnings name every worker ever paid, so leaves go out in parts (one per worker here);
    a part forged by another peer under the real root spoils only that peer's set."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    worker = net.client("worker")
    async with await Database.open(tmp_path / "sentry.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry, payout_min_wei=0)  # workers claim
        anchorer.leaves_per_message = 1
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH))
        other = TaskRef(job_id=b"\x08" * 16, task=0, attempt=0)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, 2 * ETH, ref=other,
                                                 worker="worker2"))  # fmt: skip
        await anchorer.step()
        net.chain.advance(3601)
        await anchorer.step()
    sent = [b for b in anchorer.net.sent if isinstance(b, EpochLeaves)]  # type: ignore[attr-defined]
    # once while pending (for other anchorers to audit), once final (for workers to claim)
    assert [p.parts for p in sent] == [2, 2, 2, 2]
    assert len({p.earnings_root for p in sent}) == 1
    parts = sent[2:]
    forged = dataclasses.replace(parts[0], amounts=[Wei(5 * ETH)])
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        await payee._on_leaves(forged, "mallory")
        for part in reversed(parts):
            await payee._on_leaves(part, "sentry")
        await payee._on_leaves(parts[1], "mallory")  # too late: that epoch is final here
    assert payee.leaves is not None and len(payee.leaves.amounts) == 2
    assert worker.earned_of() == ETH - ETH // 100, "claimed its own leaf, not the forged one"


async def test_the_anchorer_pays_out_workers_owed_enough_once(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    journal = Journal(tmp_path / "journal.db")  # as in the daemon: the multiproof's flags too
    sentry = Settlement(net.chain, artifacts.load(), net.address, net.keys["sentry1"],
                        journal=journal)  # fmt: skip
    sentry.stake(ETH)
    async with await Database.open(tmp_path / "sentry.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry, payout_min_wei=ETH // 2)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH))
        other = TaskRef(job_id=b"\x08" * 16, task=0, attempt=0)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH // 4, ref=other,
                                                 worker="worker2"))  # fmt: skip
        await anchorer.step()
        net.chain.advance(3601)
        await anchorer.step()  # final: the worker owed 0.99 ETH is paid, worker2's 0.2475 waits
        await anchorer.step()  # nothing new: no second payout
    assert net.client("worker").earned_of() == ETH - ETH // 100
    assert net.client("worker2").earned_of() == 0
    assert len(sentry.contract.events.EarningsClaimed().get_logs(from_block=0)) == 1
    assert (await anchorer.status())["workers_paid_out_here"] == 1
    [row] = [r for r in journal.rows("mined") if r.op == "payout"]
    assert row.args[3] == [False]  # one leaf and its sibling: a flag, kept as a boolean


async def test_a_failing_payout_does_not_stop_the_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)

    async def broke(self: Payer, final: Any) -> None:
        raise ChainUnavailable("payout: chain unreachable")

    monkeypatch.setattr(Payer, "pay", broke)
    async with await Database.open(tmp_path / "sentry.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH))
        await anchorer.step()
        net.chain.advance(3601)
        await anchorer.step()  # final: the payout fails, the leaves still go out
    assert any(isinstance(b, EpochLeaves) for b in anchorer.net.sent)  # type: ignore[attr-defined]
    assert net.client("worker").earned_of() == 0


async def test_a_caps_spend_lets_the_lost_workers_line_be_anchored(tmp_path: Path) -> None:
    """The lost worker never handed in a voucher, and no later voucher brings a spend that
    counts its line: only the cap's own spend covers it (without it, the requester is short
    and neither line is anchored)."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    hook = SettlementHook(sentry.domain, net.keys["requester"])
    lost = TaskRef(job_id=b"\x08" * 16, task=0, attempt=0)
    cap_sig, voucher_sig = hook.cap(lost, net.addr("worker2"), ETH // 2)
    spend = hook.spend(net.addr("requester"), ETH + ETH // 2)
    cap = VoucherCap(
        expires_ms=2**40, nonce=new_nonce(), ref=lost, amount_wei=Wei(ETH // 2),
        requester=bytes.fromhex(net.addr("requester")[2:]), cap_sig=cap_sig,
        worker=bytes.fromhex(net.addr("worker2")[2:]), voucher_sig=voucher_sig,
        spend_wei=Wei(spend.cumulative), spend_sig=spend.signature,
    )  # fmt: skip
    async with await Database.open(tmp_path / "sentry.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry, payout_min_wei=0)
        assert await anchorer.on_voucher(voucher(net, sentry.domain, ETH, spend=ETH))
        assert await anchorer.on_cap(cap)
        assert not await anchorer.on_cap(cap), "a repeat"
        await anchorer.step()
    assert sentry.pool_of(net.addr("requester"))["debited"] == ETH + ETH // 2


async def test_the_requesters_cap_carries_its_current_spend(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    chain = node_of(net, "requester", net.client("requester"))
    lost = dataclasses.replace(REF, attempt=1)
    async with await Database.open(tmp_path / "node.db") as db:
        book = SpendBook(chain, db)
        await book.sign(REF, net.addr("worker"), 300)
        await book.sign(lost, net.addr("worker2"), 200)
        cap = await Caps(chain, db, StubNet(), book)._cap(lost, net.addr("worker2"), 120)  # type: ignore[arg-type]
    assert cap.amount_wei == 120 and cap.spend_wei == 500  # the cap does not lower the spend
    check_cap(chain.domain, cap)


async def test_the_requesters_spend_only_grows_and_survives_a_restart(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    chain = node_of(net, "requester", net.client("requester"))
    w1, w2, other = net.addr("worker"), net.addr("worker2"), dataclasses.replace(REF, attempt=1)
    async with await Database.open(tmp_path / "node.db") as db:
        book = SpendBook(chain, db)
        assert (await book.sign(REF, w1, 100)).cumulative == 100
        assert (await book.sign(other, w2, 40)).cumulative == 140  # lines add up
        assert (await book.sign(REF, w1, 250)).cumulative == 290  # a line's largest counts
    async with await Database.open(tmp_path / "node.db") as db:  # kill -9, restart
        again = await SpendBook(chain, db).sign(REF, w1, 90)  # a cap lower: never less
    assert again.cumulative == 290 and spend_signer(chain.domain, again) == net.addr("requester")
    moved = make_net(net.chain)  # the node now settles on another deployment (a new contract)
    moved.keys["requester"] = net.keys["requester"]
    elsewhere = node_of(moved, "requester", moved.client("requester"))
    async with await Database.open(tmp_path / "node.db") as db:
        fresh = await SpendBook(elsewhere, db).sign(REF, w1, 7)
        assert fresh.cumulative == 7, "the old contract's lines are not authorised again here"
        assert (await SpendBook(chain, db).current()).cumulative == 290, "nor lost there"


async def test_excluded_tasks_are_held_until_the_hook_lets_them_through(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    async with await Database.open(tmp_path / "node.db") as db:
        anchorer = await fresh_anchorer(net, db, sentry)

        verified: set[TaskRef] = set()

        async def not_verified(ref: TaskRef) -> bool:
            return ref not in verified

        anchorer.chain.excluded = not_verified
        assert not await anchorer.on_voucher(voucher(net, sentry.domain, ETH))
        assert anchorer.machine is not None and not anchorer.machine.latest
        await anchorer.step()
        assert not anchorer.machine.latest and sentry.epoch_count() == 0, "held, not anchored"
        verified.add(REF)
        await anchorer.step()  # asked again: verified now, so taken and anchored
        assert sentry.epoch_count() == 1 and not anchorer.held


@pytest.mark.slow
async def test_escrow_waits_out_a_chain_outage_and_funds_once(
    anvil_bin: str, tmp_path: Path
) -> None:
    node = Anvil(anvil_bin, state=tmp_path / "anvil.json")
    node.start()
    try:
        net = make_net(Chain.rpc(node.url, 31337))
        journal = Journal(tmp_path / "node.db")
        client = Settlement(net.chain, net.client("requester").artifact, net.address,
                            net.keys["requester"], journal=journal)  # fmt: skip
        chain = node_of(net, "requester", client)
        away = trio.Event()
        chain.service = ChainService(lambda: client, retry_base_s=0.05,
                                     on_unavailable=lambda exc: away.set())  # fmt: skip
        await chain.service.start()
        async with await Database.open(tmp_path / "node.db") as db:
            escrow = Escrow(chain, db, poll_s=1)
            await escrow.job_submitted(REF.job_id, ETH // 10, 0)
            node.stop()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(escrow.step)
                    await away.wait()  # the fund is journaled and waiting
                    await trio.to_thread.run_sync(node.start)
            row = await db.query_one("SELECT state FROM settle_escrow")
        assert row is not None and row["state"] == "funded"
        assert net.client("other").pool_of(net.addr("requester"))["balance"] == ETH // 10
        assert [r.op for r in journal.rows("mined")] == ["fund"]
    finally:
        node.stop()


async def test_a_dry_run_shows_the_escrow_and_moves_nothing(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    real = net.client("requester")
    client = Settlement(net.chain, real.artifact, net.address, net.keys["requester"],
                        dry_run=True)  # fmt: skip
    chain = node_of(net, "requester", client)
    await chain.service.start()
    async with await Database.open(tmp_path / "node.db") as db:
        escrow = Escrow(chain, db, poll_s=1)
        await escrow.job_submitted(REF.job_id, ETH // 10, 0)
        await escrow.step()
        row = await db.query_one("SELECT state FROM settle_escrow")
    assert row is not None and row["state"] == "new", "nothing was sent, so nothing moved"
    assert real.pool_of()["balance"] == 0


async def test_escrow_funds_in_the_token_and_waits_while_the_wallet_is_short(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded(), token=True)
    journal = Journal(tmp_path / "node.db")
    client = Settlement(net.chain, net.client("requester").artifact, net.address,
                        net.keys["requester"], journal=journal)  # fmt: skip
    chain = node_of(net, "requester", client)
    await chain.service.start()
    held = client.balance()
    async with await Database.open(tmp_path / "node.db") as db:
        escrow = Escrow(chain, db, poll_s=1)
        await escrow.job_submitted(REF.job_id, held + 1, 0)  # more than the wallet has
        await escrow.step()
        assert (await db.query_one("SELECT state FROM settle_escrow"))["state"] == "new"  # type: ignore[index]
        assert journal.rows() == [], "nothing sent that had to fail"
        await db.execute("UPDATE settle_escrow SET funded_wei = ?", (str(ETH),))
        await escrow.step()
        assert (await db.query_one("SELECT state FROM settle_escrow"))["state"] == "funded"  # type: ignore[index]
    assert [r.op for r in journal.rows("mined")] == ["approve", "fund"]
    assert client.pool_of()["balance"] == ETH and client.balance() == held - ETH


async def test_the_worker_keeps_only_genuine_twins_and_the_largest(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    worker = net.client("worker")
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    requester = net.addr("requester")
    async with await Database.open(tmp_path / "node.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        good = voucher(net, worker.domain, ETH, spend=3 * ETH)
        market = Voucher(expires_ms=2**40, nonce=new_nonce(), ref=REF, worker="w",
                         amount_wei=Wei(ETH), seconds=1, chain_sig=good.signature,
                         spend_wei=Wei(3 * ETH), spend_sig=good.spend_sig)  # fmt: skip
        spend = payee.check(market, requester)
        assert spend == good.spend()
        forged = net.spend("requester", 3 * ETH, signer="worker")
        for bad, why in [
            ({"chain_sig": None}, "chain_sig.*missing"),
            ({"amount_wei": Wei(2 * ETH)}, "signed by"),  # a twin of another amount
            ({"spend_sig": None}, "spend.*missing"),
            ({"spend_wei": Wei(ETH // 2)}, "below this voucher"),
            ({"spend_sig": forged.signature}, "not the requester"),
        ]:
            with pytest.raises(Invalid, match=why):
                payee.check(dataclasses.replace(market, **bad), requester)
        await payee.keep(REF, requester, ETH, good.signature, spend)
        older = dataclasses.replace(spend, cumulative=ETH)
        await payee.keep(REF, requester, ETH // 2, b"older", older)  # arriving late
        await payee.ended(REF)
        sent = [b for b in payee.net.sent if isinstance(b, SettledVoucher)]  # type: ignore[attr-defined]
    assert [(v.amount_wei, v.signature, v.spend()) for v in sent] == [(ETH, good.signature, spend)]


async def test_a_task_that_ends_sends_its_own_voucher_only(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    worker = net.client("worker")
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        other = dataclasses.replace(REF, task=7)
        for ref, amount in [(REF, ETH), (other, 2 * ETH)]:
            signed = voucher(net, worker.domain, amount)
            await payee.keep(ref, net.addr("requester"), amount, signed.signature, signed.spend())
        await payee.ended(REF)
        await payee.ended(other)
        sent = [b for b in payee.net.sent if isinstance(b, SettledVoucher)]  # type: ignore[attr-defined]
    assert [(v.ref, v.amount_wei) for v in sent] == [(REF, ETH), (other, 2 * ETH)]


async def test_the_worker_resends_its_voucher_until_an_anchor_on_chain_shows_it(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    worker = net.client("worker")
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with (
        await Database.open(tmp_path / "worker.db") as db,
        await Database.open(tmp_path / "sentry.db") as sentry_db,
    ):
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        mine = voucher(net, worker.domain, ETH)
        await payee.keep(REF, net.addr("requester"), ETH, mine.signature, mine.spend())
        await payee.ended(REF)

        async def resent() -> int:
            before = len(payee.net.sent)  # type: ignore[attr-defined]
            await payee._submit(0, None, unanchored=True)
            return len(payee.net.sent) - before  # type: ignore[attr-defined]

        assert await resent() == 1, "no anchor shows it: resent, however long ago it ended"
        # A row kept before spends existed (migration 13 left it spend 0): skipped, not a crash.
        old = dataclasses.replace(REF, task=9)
        await payee.keep(old, net.addr("requester"), ETH, mine.signature, mine.spend())
        await payee.ended(old)
        await db.execute("UPDATE settle_vouchers SET spend_wei = '0', spend_sig = x'' "
                         "WHERE idx = 9")  # fmt: skip
        assert await resent() == 1 and await resent() == 1
        # An entries message proving our line to a root that is not the chain's shows nothing.
        line = entry_of(REF, mine.requester, mine.worker, ETH)
        row = EntryRow(worker=line.worker, job=line.job, task=line.task, amount_wei=Wei(ETH),
                       previous_wei=Wei(0),
                       signature=b"", proof=[])  # fmt: skip
        forged = EpochEntries(expires_ms=2**40, nonce=new_nonce(), index=0, part=0, parts=1,
                              entries_root=line.leaf(), requester=mine.requester,
                              rows=[row])  # fmt: skip
        await payee._on_entries(forged)
        assert await resent() == 1

        anchorer = await fresh_anchorer(net, sentry_db, net.client("sentry1"))
        assert await anchorer.on_voucher(mine)
        await anchorer.step()
        posted = [b for b in anchorer.net.sent if isinstance(b, EpochEntries)]  # type: ignore[attr-defined]
        assert posted, "the anchorer gossips the entries of the epoch it posted"
        for entries in posted:
            await payee._on_entries(entries)
        assert await resent() == 0, "shown on chain at our amount: no more resends"
