"""A line its requester capped after a failover, as the worker sees it, on a real EVM with a
real sqlite file: once the worker hears a cap its requester signed, the line is due the cap,
so the worker stops resending a voucher no anchorer will take above it (they refused it every
half epoch for a day) and does not judge the requester in arrears for the rest; a forged cap
or another worker's changes nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consensus.envelope import new_nonce
from consensus.kinds import Wei
from consensus.market.messages import TaskRef
from consensus.settlement.messages import VoucherCap
from node.chain import cap_echo
from node.chain.backend import Chain
from node.chain.hook import SettlementHook
from node.chain.payee import Payee
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_arrears_node import HOLD_MS, ClockedNet
from tests.chain.test_settlement_node import REF, StubNet, fresh_anchorer, node_of, voucher


def cap_of(net: Net, ref: TaskRef, amount: int, *, signer: str = "requester",
           worker: str = "worker") -> VoucherCap:  # fmt: skip
    hook = SettlementHook(net.client("requester").domain, net.keys[signer])
    cap_sig, voucher_sig = hook.cap(ref, net.addr(worker), amount)
    return VoucherCap(
        expires_ms=2**40, nonce=new_nonce(), ref=ref, amount_wei=Wei(amount),
        requester=bytes.fromhex(net.addr("requester")[2:]), cap_sig=cap_sig,
        worker=bytes.fromhex(net.addr(worker)[2:]), voucher_sig=voucher_sig,
    )  # fmt: skip


async def test_a_capped_line_is_resent_only_while_no_anchor_shows_its_cap(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    worker = net.client("worker")
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        mine = voucher(net, worker.domain, ETH)
        await payee.keep(REF, net.addr("requester"), ETH, mine.signature, mine.spend())
        await payee.ended(REF)

        async def resent() -> int:
            before = len(payee.net.sent)  # type: ignore[attr-defined]
            await payee._submit(0, None, unanchored=True)
            return len(payee.net.sent) - before  # type: ignore[attr-defined]

        assert await resent() == 1
        assert not await payee.on_cap(cap_of(net, REF, 0, signer="sentry1")), "forged"
        assert not await payee.on_cap(cap_of(net, REF, 0, worker="worker2")), "not ours"
        assert await resent() == 1
        assert await payee.on_cap(cap_of(net, REF, 0))
        assert not await payee.on_cap(cap_of(net, REF, 0)), "a repeat changes nothing"
        assert await resent() == 0, "due 0: nothing an anchor could show is missing"
        before = len(payee.net.sent)  # type: ignore[attr-defined]
        await payee._submit(0, [REF])  # as when the task ends after the cap came
        assert len(payee.net.sent) == before, "not even once at the end"  # type: ignore[attr-defined]


async def test_a_line_capped_at_zero_does_not_put_its_requester_in_arrears(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    for requester in ("requester", "other"):
        net.client(requester).fund(10 * ETH)
    sentry = net.client("sentry1")
    sentry.stake(ETH)
    worker = net.client("worker")
    chain = node_of(net, "worker", worker, arrears_anchors=1)
    await chain.service.start()
    async with (
        await Database.open(tmp_path / "worker.db") as db,
        await Database.open(tmp_path / "sentry.db") as sentry_db,
    ):
        clock = ClockedNet()
        payee = Payee(chain, db, clock, HOLD_MS)  # type: ignore[arg-type]
        mine = voucher(net, worker.domain, ETH)
        await payee.keep(REF, net.addr("requester"), ETH, mine.signature, mine.spend())
        assert await payee.arrears.step() == {}  # running: its snapshot is taken
        await payee.ended(REF)
        clock.at += 2 * HOLD_MS
        anchorer = await fresh_anchorer(net, sentry_db, sentry)
        other = voucher(net, sentry.domain, ETH, ref=TaskRef(job_id=b"\x09" * 16, task=0,
                        attempt=0), worker="worker2", requester="other", spend=ETH)  # fmt: skip
        assert await anchorer.on_voucher(other)
        net.chain.advance(2)
        await anchorer.step()  # an anchor that never debits our requester
        ours = net.addr("requester").lower()
        assert list(await payee.arrears.step()) == [ours], "uncapped: in arrears"
        assert await payee.on_cap(cap_of(net, REF, 0))  # the requester failed the task over
        assert await payee.arrears.step() == {}, "due nothing: no arrears"


async def test_an_anchorer_refusing_a_voucher_over_its_cap_sends_the_cap_to_the_worker(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    sentry, worker = net.client("sentry1"), net.client("worker")
    sentry.stake(ETH)
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with (
        await Database.open(tmp_path / "worker.db") as db,
        await Database.open(tmp_path / "sentry.db") as sentry_db,
    ):
        anchorer = await fresh_anchorer(net, sentry_db, sentry)
        cap = cap_of(net, REF, 0)
        assert await anchorer.on_cap(cap)  # heard while the worker was away
        sent: list[Any] = anchorer.net.sent  # type: ignore[attr-defined]
        sent.clear()
        mine = voucher(net, worker.domain, ETH)
        assert not await anchorer.on_voucher(mine), "over the cap"
        assert not await anchorer.on_voucher(voucher(net, worker.domain, ETH)), "resent"
        echoed = [b for b in sent if isinstance(b, VoucherCap)]
        assert len(echoed) == 1, "the cap again, once an epoch however often it is resent"
        assert (echoed[0].ref, echoed[0].cap_sig) == (cap.ref, cap.cap_sig)
        assert echoed[0].nonce != cap.nonce, "a fresh envelope: gossip drops a repeat"
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        await payee.keep(REF, net.addr("requester"), ETH, mine.signature, mine.spend())
        await payee.ended(REF)
        assert await payee.on_cap(echoed[0]), "the worker takes it from the anchorer"
        payee.net.sent.clear()  # type: ignore[attr-defined]
        await payee._submit(0, None, unanchored=True)
        assert payee.net.sent == [], "and resends no more"  # type: ignore[attr-defined]
        restarted = await fresh_anchorer(net, sentry_db, sentry)  # the caps come from sqlite
        assert not await restarted.on_voucher(voucher(net, worker.domain, ETH)), "over the cap"
        [again] = [b for b in restarted.net.sent if isinstance(b, VoucherCap)]  # type: ignore[attr-defined]
        assert (again.ref, again.cap_sig, again.voucher_sig) == (cap.ref, cap.cap_sig, b"")


async def test_the_newest_caps_taken_are_kept_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = make_net(Chain.embedded())
    monkeypatch.setattr(cap_echo, "KEPT", 2)
    clock = SimpleNamespace(now_ms=iter(range(1, 100)).__next__)
    refs = [TaskRef(job_id=bytes([i]) * 16, task=0, attempt=0) for i in range(3)]
    async with await Database.open(tmp_path / "sentry.db") as db:
        echo = cap_echo.CapEcho(clock, db, 1000)  # type: ignore[arg-type]
        for ref in refs:
            cap = cap_of(net, ref, 0)
            await echo.took(cap.entry().line, cap)
        again = cap_echo.CapEcho(clock, db, 1000)  # type: ignore[arg-type]
        await again.load()
        kept = [cap.ref for cap, _ in again.kept.values()]
        assert kept == refs[1:], "the oldest went, in sqlite as in memory"
