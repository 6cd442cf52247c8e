"""A requester's disputes on a real EVM (embedded and anvil), against the real anchorer.

The anchorer posts a correct epoch (not disputed, final), then one with an inflated entry for
our requester (the anchorer fed a voucher amount the requester never signed): the requester's
service hears the entries on gossip, disputes the inflated one within the window, the anchorer
cannot answer, the requester voids the anchor, and the anchorer's bond is slashed; every
balance to the wei, gas included. A kill -9 at either side of the dispute neither disputes
twice nor forgets to void; a dispute by hand of a correct entry is answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from config.schema import ChainSettings
from consensus.envelope import new_nonce
from consensus.kinds import Wei
from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Entry
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import EntryRow, EpochEntries, SettledVoucher, entry_of
from node.api import ApiError, Request
from node.chain.anchorer import Anchorer
from node.chain.api import chain_routes
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.disputer import Disputer
from node.chain.errors import DisputeRefused
from node.chain.hook import SettlementHook
from node.chain.journal import Journal
from node.chain.node import ChainNode
from node.chain.service import ChainService
from node.chain.signing import sign_voucher
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_settlement_node import StubNet

WINDOW = 3600  # the fixture's dispute (and answer) window
BURN = "0x000000000000000000000000000000000000dEaD"
JOB_A, JOB_B = b"\x0a" * 16, b"\x0b" * 16
A = TaskRef(job_id=JOB_A, task=0, attempt=0)  # worker's line: anchored as signed
B = TaskRef(job_id=JOB_B, task=1, attempt=0)  # worker2's line: inflated in the second epoch


class Crash(Exception):
    """Stands for kill -9 at that line: nothing after it runs."""


class Hub(StubNet):
    """Gossip between the anchorer and the requester: what is published is kept in order."""

    peer_id = "hub"

    async def deliver(self, disputer: Disputer) -> int:
        """Hands the requester every entries message sent so far; how many entries were new."""
        new = 0
        for body in self.sent:
            if isinstance(body, EpochEntries) and body.requester == disputer.me:
                new += await disputer.hear(body)
        return new


def chain_node(net: Net, who: str, client: Settlement) -> ChainNode:
    service = ChainService(lambda: client, retry_base_s=0.05)
    s = ChainSettings(backend="rpc", settle=True, epoch_s=1, poll_s=1)
    return ChainNode(service, s, client.address, client.domain,
                     SettlementHook(client.domain, net.keys[who]))  # fmt: skip


class Requester:
    """What the requester node signed (its market tables), its journaled wallet, its service."""

    def __init__(self, net: Net, db: Database, path: Path) -> None:
        self.net, self.db = net, db
        self.journal = Journal(path)
        base = net.client("requester")
        self.client = Settlement(net.chain, base.artifact, net.address, net.keys["requester"],
                                 journal=self.journal)  # fmt: skip

    async def start(self, hub: Hub) -> Disputer:
        node = chain_node(self.net, "requester", self.client)
        await node.service.start()
        return Disputer(node, self.db, hub)  # type: ignore[arg-type]

    def sig(self, ref: TaskRef, worker: str, amount: int) -> bytes:
        twin = chain_voucher_for(ref, bytes.fromhex(self.net.addr(worker)[2:]), amount)
        return sign_voucher(self.net.keys["requester"], self.client.domain, twin)

    async def vouched(
        self, ref: TaskRef, worker: str, amount: int, recorded: int | None = None
    ) -> SettledVoucher:
        """The requester sends a voucher and records it as the market does (``recorded``: a
        lower amount, as when the reply to the last voucher never came back); the worker's
        copy."""
        await self.db.execute(
            "INSERT INTO settle_peers (peer_id, address) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (worker, self.net.addr(worker)),
        )
        await self.db.execute(
            "INSERT INTO attempts (job_id, idx, attempt, worker, addrs, price_wei, gpus, "
            "started_ms, vouched_wei) VALUES (?, ?, ?, ?, '[]', '1', 1, 0, ?) "
            "ON CONFLICT DO UPDATE SET vouched_wei = excluded.vouched_wei",
            (ref.job_id, ref.task, ref.attempt, worker, str(recorded or amount)),
        )
        spend = self.net.spend("requester", 50 * ETH)  # covers what the tests anchor
        return SettledVoucher(
            expires_ms=2**40, nonce=new_nonce(), ref=ref, amount_wei=Wei(amount),
            requester=spend.requester,
            worker=bytes.fromhex(self.net.addr(worker)[2:]),
            signature=self.sig(ref, worker, amount),
            spend_wei=Wei(spend.cumulative), spend_sig=spend.signature,
        )  # fmt: skip

    def paid_gas(self, op: str) -> int:
        total = 0
        for row in self.journal.rows("mined"):
            if row.op == op:
                r = self.net.chain.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
                total += int(r["gasUsed"]) * int(r["effectiveGasPrice"])
        return total

    async def rows(self) -> list[tuple[int, str, str]]:
        found = await self.db.query("SELECT epoch, state, reason FROM settle_disputes")
        return [(r["epoch"], r["state"], r["reason"]) for r in found]


async def anchorer_of(net: Net, db: Database, hub: Hub) -> Anchorer:
    sentry = net.client("sentry1")
    anchorer = Anchorer(chain_node(net, "sentry1", sentry), db, hub)  # type: ignore[arg-type]
    await anchorer.chain.service.start()
    await anchorer.resume()
    return anchorer


def inflate(anchorer: Anchorer, v: SettledVoucher, amount: int) -> Entry:
    """The anchorer takes a voucher amount the requester never signed (its check skipped)."""
    assert anchorer.machine is not None
    forged = entry_of(v.ref, v.requester, v.worker, amount)
    anchorer.machine.on_voucher(forged, v.signature)
    return forged


@dataclass
class Scene:
    hub: Hub
    anchorer: Anchorer
    req: Requester
    disputer: Disputer
    dbs: tuple[Database, Database]

    async def close(self) -> None:
        for db in self.dbs:
            await db.close()


async def correct_epoch_then_forged(net: Net, tmp: Path) -> Scene:
    """Epoch 0 anchors what was signed (final, not disputed); epoch 1 is posted with B's line
    at 3 ETH where the requester signed 1 ETH, and its entries gossiped."""
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    hub = Hub()
    sentry_db = await Database.open(tmp / "sentry.db")
    req_db = await Database.open(tmp / "requester.db")
    anchorer = await anchorer_of(net, sentry_db, hub)
    req = Requester(net, req_db, tmp / "requester.db")
    disputer = await req.start(hub)
    # Our records say half of what we signed: the voucher shown with the entry is ours.
    assert await anchorer.on_voucher(await req.vouched(A, "worker", ETH, recorded=ETH // 2))
    await anchorer.step()
    assert await hub.deliver(disputer) == 1
    await disputer.step()
    assert await req.rows() == [] and disputer.heard, "a correct epoch is not disputed"
    net.chain.advance(WINDOW + 1)
    await anchorer.step()
    assert net.client("other").anchor()["state"] == "final"
    assert await anchorer.on_voucher(await req.vouched(A, "worker", 2 * ETH))
    inflate(anchorer, await req.vouched(B, "worker2", ETH), 3 * ETH)
    await anchorer.step()
    latest = net.client("other").anchor()
    assert (latest["epoch"], latest["state"], latest["total"]) == (1, "pending", 4 * ETH)
    assert await hub.deliver(disputer) == 2
    return Scene(hub, anchorer, req, disputer, (sentry_db, req_db))


async def test_an_inflated_entry_is_disputed_voided_and_the_anchorer_slashed(
    net: Net, tmp_path: Path
) -> None:
    scene = await correct_epoch_then_forged(net, tmp_path)
    anchorer, req, disputer = scene.anchorer, scene.req, scene.disputer
    c = net.client("other")
    coin, burned = c.balance(net.addr("requester")), net.chain.balance(BURN)
    try:
        await disputer.step()  # found and disputed within the window
        assert await req.rows() == [(1, "disputed", "above signed")]
        assert len(c.contract.events.Disputed().get_logs(from_block=0)) == 1
        await anchorer.step()  # it tries to answer with the 1 ETH voucher: refused
        assert c.anchor()["open_disputes"] == 1
        await disputer.step()
        assert await req.rows() == [(1, "disputed", "above signed")], "it may still answer"
        net.chain.advance(WINDOW + 5)  # past the answer time, in the latest block too
        await disputer.step()  # the answer time is over: void
        assert await req.rows() == [(1, "voided", "above signed")]
        await anchorer.step()
        assert anchorer.machine is not None and anchorer.machine.state == "idle"
    finally:
        await scene.close()
    assert c.anchor()["state"] == "void"
    assert c.pool_of(net.addr("requester"))["balance"] == 9 * ETH  # epoch 1's 4 ETH came back
    assert c.stake_of(net.addr("sentry1"))["bonded"] == 0
    gas = req.paid_gas("dispute") + req.paid_gas("voidAnchor")
    assert c.balance(net.addr("requester")) - coin == ETH // 2 - gas  # half the bond, less gas
    assert net.chain.balance(BURN) - burned == ETH // 2
    # 9 in the pool, 1 debited by epoch 0: its fee stays, the rest the sentry paid out
    assert net.chain.balance(net.address) == 10 * ETH - (ETH - ETH // 100)
    assert c.earned_of(net.addr("worker")) == ETH - ETH // 100
    assert [r.op for r in req.journal.rows()] == ["dispute", "voidAnchor"]


@pytest.mark.parametrize("crash_at", ["before_send", "after_mined"])
async def test_a_crash_around_the_dispute_neither_repeats_nor_forgets_it(
    crash_at: str, net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = await correct_epoch_then_forged(net, tmp_path)
    req = scene.req
    real_send = Settlement.send

    def crashing(self: Settlement, op: str, args: list[Any], value: int = 0) -> Any:
        if op == "dispute" and crash_at == "after_mined":
            real_send(self, op, args, value)
        if op == "dispute":
            raise Crash
        return real_send(self, op, args, value)

    try:
        monkeypatch.setattr(Settlement, "send", crashing)
        with pytest.raises(Crash):
            await scene.disputer.step()
        monkeypatch.setattr(Settlement, "send", real_send)
        assert await req.rows() == [(1, "found", "above signed")], "written before the send"
        restarted = await req.start(scene.hub)  # hears nothing yet: the row alone carries on
        await restarted.step()
        assert await req.rows() == [(1, "disputed", "above signed")]
        net.chain.advance(WINDOW + 5)  # past the answer time, in the latest block too
        await restarted.step()
        assert await req.rows() == [(1, "voided", "above signed")]
    finally:
        await scene.close()
    c = net.client("other")
    assert len(c.contract.events.Disputed().get_logs(from_block=0)) == 1
    assert [r.op for r in req.journal.rows("mined")] == ["dispute", "voidAnchor"]
    assert c.anchor()["state"] == "void"


async def test_a_dispute_by_hand_of_a_correct_entry_is_answered(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    hub = Hub()
    async with (
        await Database.open(tmp_path / "sentry.db") as sentry_db,
        await Database.open(tmp_path / "requester.db") as req_db,
    ):
        anchorer = await anchorer_of(net, sentry_db, hub)
        req = Requester(net, req_db, tmp_path / "requester.db")
        disputer = await req.start(hub)
        disputer.chain.disputer = disputer
        assert await anchorer.on_voucher(await req.vouched(A, "worker", ETH))
        await anchorer.step()
        me = bytes.fromhex(net.addr("requester")[2:])
        fake = Entry(me, b"\x05" * 20, b"\x06" * 32, b"\x00" * 32, 5 * ETH)  # a tree of one
        row = EntryRow(worker=fake.worker, job=fake.job, task=fake.task,
                       amount_wei=Wei(fake.amount), previous_wei=Wei(0), signature=b"",
                       proof=[])  # fmt: skip
        stranger = EpochEntries(expires_ms=2**40, nonce=new_nonce(), index=0, part=0, parts=1,
                                entries_root=fake.leaf(), requester=me, rows=[row])  # fmt: skip
        await disputer.step()  # reads the anchor: nothing heard yet
        assert await disputer.hear(stranger) == 0, "not the root on chain"
        assert await hub.deliver(disputer) == 1
        job, worker = A.job_id + b"\0" * 16, bytes.fromhex(net.addr("worker")[2:])
        with pytest.raises(DisputeRefused, match="epoch 3 is not pending"):
            await disputer.by_hand(3, job, worker, None)
        with pytest.raises(DisputeRefused, match="no entry of ours"):
            await disputer.by_hand(0, job, b"\x05" * 20, None)
        route = chain_routes(SimpleNamespace(chain=disputer.chain))[("POST", "/v1/chain/dispute")]  # type: ignore[arg-type]
        ask = {"epoch": 0, "job": "0x" + job.hex(), "worker": net.addr("worker"), "dry_run": True}
        with pytest.raises(ApiError, match="job: 0x and 32 bytes"):
            await route(Request("POST", "/", "", json.dumps({**ask, "job": "0x12"}).encode()))
        dry = await route(Request("POST", "/", "", json.dumps(ask).encode()))
        assert [(d["reason"], d["answerable"], d["state"]) for d in dry["disputes"]] == [
            ("by hand", True, "dry run")
        ]
        assert await req.rows() == [], "a dry run writes nothing"
        done = await disputer.by_hand(0, job, worker, None)
        assert [d["state"] for d in done["disputes"]] == ["disputed"]
        await anchorer.step()  # answers with the requester's own voucher
        await disputer.step()
        assert await req.rows() == [(0, "answered", "by hand")]
        net.chain.advance(WINDOW + 1)
        await anchorer.step()
        assert net.client("other").anchor()["state"] == "final"
        status = await disputer.status()
    assert status["disputes"] == {"answered": 1}
