"""The chain services' smaller memories stay bounded, with no chain needed (stand-ins answer
what the chain would): the auditor forgets what it raised once the next anchor is posted, the
anchorer keeps the disputed leaves of its pending epoch only (and answers a dispute again in
the epoch that re-anchors a voided one's entries), the worker keeps the last few entries roots
it found on chain, and escrow keeps the chain addresses of recent bidders, reading the others
from sqlite."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account

from consensus.market.messages import TaskRef
from consensus.settlement.anchoring import Anchoring, Answer, Post
from consensus.settlement.eip712 import Domain
from consensus.settlement.epoch import Entry, Spend
from consensus.settlement.following import ChainAnchor
from consensus.settlement.leaves import FinalLeaves
from node.chain import escrow as escrow_module
from node.chain.anchorer import Anchorer
from node.chain.auditor import Auditor
from node.chain.errors import ChainError, ChainReverted
from node.chain.escrow import Escrow
from node.chain.hook import SettlementHook
from node.chain.payee import ROOTS_KEPT, Payee
from storage.db import Database

ME, OTHER, WORKER, REQUESTER = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20, b"\x04" * 20
DOMAIN = Domain(chain_id=1, contract=b"\x05" * 20)
REF = TaskRef(job_id=b"\x07" * 16, task=0, attempt=0)
EPOCH_MS = 1000


class Chain:
    """What the services read from the chain, and the calls they send (by name)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.events_of: dict[tuple[str, int], list[bytes]] = {}  # (event, epoch) -> leaves
        self.entries_root = b""

    async def call(self, fn: Any) -> Any:
        return fn(self)

    def __getattr__(self, name: str) -> Any:  # a transaction: recorded
        return lambda *args: self.sent.append(name)

    def sum_disputes(self, index: int, *, answered: bool) -> list[Any]:
        return []

    def events(self, name: str, epoch: int) -> list[dict[str, Any]]:
        return [{"args": {"leaf": leaf}} for leaf in self.events_of.get((name, epoch), [])]

    def anchor(self) -> dict[str, Any]:
        return {"entries_root": self.entries_root}


def anchor(index: int, anchorer: bytes) -> ChainAnchor:
    return ChainAnchor(index=index, anchorer=anchorer, earnings_root=b"e" * 32,
                       entries_root=b"r" * 32, state="pending", posted_ms=0)  # fmt: skip


async def test_the_auditor_raises_once_per_anchor_and_forgets_it_once_the_next_is_posted() -> None:
    chain = Chain()
    auditor = Auditor(chain, None, ME)  # type: ignore[arg-type]
    m = Anchoring(epoch_ms=EPOCH_MS, fee_bps=100)
    leaves = FinalLeaves(4, b"", {WORKER: 10, OTHER: 5})
    await auditor._dispute(4, WORKER, leaves)
    await auditor._dispute(4, WORKER, leaves)
    assert chain.sent == ["dispute_earnings"], "once"
    await auditor.step(m, [anchor(4, OTHER)], {}, 0, 1000)
    await auditor._dispute(4, WORKER, leaves)
    assert chain.sent == ["dispute_earnings"], "still once while its anchor is the latest"
    await auditor.step(m, [anchor(5, ME)], {}, 0, 1000)  # 4 is final or void: 5 was posted
    assert auditor._raised == set()


def epoch_anchorer(chain: Chain) -> Anchorer:
    """An anchorer whose machine holds one line of the requester, its spend covering it."""
    settings = SimpleNamespace(poll_s=1, epoch_s=1, payout_min_wei=1)
    node = SimpleNamespace(service=chain, settings=settings, address="0x" + ME.hex())
    a = Anchorer(node, None, SimpleNamespace())  # type: ignore[arg-type]
    a.machine = Anchoring(epoch_ms=EPOCH_MS, fee_bps=100)
    a.machine.on_spend(Spend(REQUESTER, 100, b"spend"))
    entry = Entry(REQUESTER, WORKER, b"j" * 32, b"t" * 32, 10)
    a.machine.on_voucher(entry, b"voucher")
    return a


def post(m: Anchoring, index: int, now_ms: int) -> bytes:
    """Posts the machine's epoch as ``index``; the leaf of its one entry."""
    effects = m.on_tick(now_ms)
    assert isinstance(effects[0], Post)
    m.on_posted(index, now_ms + EPOCH_MS)
    return effects[0].epoch.entries[0].leaf()


async def test_the_anchorer_keeps_its_pending_epochs_disputes_only() -> None:
    chain = Chain()
    a = epoch_anchorer(chain)
    m = a.machine
    assert m is not None
    leaf = post(m, 7, 0)
    chain.events_of[("Disputed", 7)] = [leaf]
    assert [type(e) for e in await a._observe()] == [Answer]
    assert await a._observe() == [], "a dispute seen is answered once"
    chain.events_of[("Voided", 7)] = [b""]  # voided for another reason
    assert await a._observe() == [] and m.state == "idle"
    assert post(m, 8, EPOCH_MS) == leaf, "its entries again: the same leaves"
    chain.events_of[("Disputed", 8)] = [leaf]
    answers = await a._observe()
    assert [(type(e), e.index) for e in answers] == [(Answer, 8)], "answered there too"  # type: ignore[union-attr]
    assert a.seen_disputes == {8: {leaf}}, "epoch 7's leaves are gone"


async def test_a_restarted_anchorer_does_not_answer_a_dispute_answered_before() -> None:
    chain = Chain()
    a = epoch_anchorer(chain)
    assert a.machine is not None
    leaf = post(a.machine, 7, 0)
    chain.events_of[("Disputed", 7)] = [leaf]
    chain.events_of[("Answered", 7)] = [leaf]
    assert await a._observe() == [], "the chain says answered: no second answer to revert"
    assert a.machine.open_disputes == set()
    del chain.events_of[("Answered", 7)]  # a reorg took the answer away
    assert [type(e) for e in await a._observe()] == [Answer], "so it is answered again"


@pytest.mark.parametrize(
    ("error", "again"),
    [(ChainError("the rpc node is down"), True), (ChainReverted("answer", "NoDispute"), False)],
)
async def test_an_answer_the_chain_did_not_take_is_sent_again_unless_it_reverted(
    error: ChainError, again: bool
) -> None:
    chain = Chain()
    a = epoch_anchorer(chain)
    assert a.machine is not None
    leaf = post(a.machine, 7, 0)
    chain.events_of[("Disputed", 7)] = [leaf]

    def answer(*_args: Any) -> None:
        raise error

    chain.answer = answer  # type: ignore[method-assign]
    (effect,) = await a._observe()
    await a._perform(effect)
    assert [type(e) for e in await a._observe()] == ([Answer] if again else [])


class Rows:
    """The worker's vouchers: none, so only the check of the root is seen."""

    async def query(self, sql: str, params: Any) -> list[Any]:
        return []


def entries_of(root: bytes) -> Any:
    mine = Entry(REQUESTER, ME, b"j" * 32, b"t" * 32, 10)
    return SimpleNamespace(entries_root=root, requester=REQUESTER,
                           entries=lambda: [(mine, None, None)])  # fmt: skip


async def test_the_worker_keeps_the_latest_roots_found_on_chain() -> None:
    checked: list[bytes] = []

    class Anchors(Chain):
        def anchor(self) -> dict[str, Any]:
            checked.append(self.entries_root)
            return super().anchor()

    chain = Anchors()
    node = SimpleNamespace(service=chain, address="0x" + ME.hex())
    payee = Payee(node, Rows(), SimpleNamespace(now_ms=lambda: 0))  # type: ignore[arg-type]
    roots = [bytes([i]) * 32 for i in range(ROOTS_KEPT + 2)]
    for root in roots:
        chain.entries_root = root  # each the chain's latest anchor when its entries come
        await payee._on_entries(entries_of(root))
    assert len(checked) == len(roots)
    await payee._on_entries(entries_of(roots[-ROOTS_KEPT]))
    assert len(checked) == len(roots), "a root kept is not asked about again"
    await payee._on_entries(entries_of(roots[0]))
    assert len(checked) == len(roots) + 1, "the oldest was forgotten: asked about again"
    assert list(payee._roots_on_chain) == roots[-ROOTS_KEPT:]


async def test_escrow_keeps_recent_bidders_and_reads_the_others_from_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(escrow_module, "PEERS_CACHED", 2)
    key = Account.create().key
    hook = SettlementHook(DOMAIN, key)
    chain = SimpleNamespace(domain=DOMAIN, address=Account.from_key(key).address, hook=hook)
    addresses = {f"peer{i}": "0x" + (bytes([0x10 + i]) * 20).hex() for i in range(4)}
    async with await Database.open(tmp_path / "node.db") as db:
        escrow = Escrow(chain, db, poll_s=1)  # type: ignore[arg-type]
        for peer, address in addresses.items():
            await escrow.remember_worker(peer, address)
        assert list(escrow._workers) == ["peer2", "peer3"], "the latest bidders"
        signed = await escrow.sign(REF, "peer0", 10)
        assert signed is not None and signed[0] == hook.sign(REF, addresses["peer0"], 10)
        assert await escrow.sign(REF, "stranger", 10) is None, "it never bid"
        reads = 0
        read = db.query_one

        async def counted(*args: Any) -> Any:
            nonlocal reads
            reads += 1
            return await read(*args)

        monkeypatch.setattr(db, "query_one", counted)
        assert await escrow.sign(REF, "stranger", 10) is None and reads == 0, "not read again"
        await escrow.remember_worker("peer1", addresses["peer3"])  # bid again, another address
        restarted = Escrow(chain, db, poll_s=1)  # type: ignore[arg-type]
        signed = await restarted.sign(replace(REF, task=1), "peer1", 10)
        assert signed is not None
        assert signed[0] == hook.sign(replace(REF, task=1), addresses["peer3"], 10)
        assert len(escrow._workers) == 2 and list(restarted._workers) == ["peer1"], (
            "none read at start: only those it signs for"
        )


async def test_a_bid_heard_while_escrow_reads_sqlite_is_the_address_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Account.create().key
    chain = SimpleNamespace(domain=DOMAIN, address=Account.from_key(key).address,
                            hook=SettlementHook(DOMAIN, key))  # fmt: skip
    address = "0x" + "13" * 20
    async with await Database.open(tmp_path / "node.db") as db:
        escrow = Escrow(chain, db, poll_s=1)  # type: ignore[arg-type]
        read = db.query_one

        async def bid_meanwhile(*args: Any) -> Any:
            row = await read(*args)  # read before the bid's row was written
            await escrow.remember_worker("late", address)
            return row

        monkeypatch.setattr(db, "query_one", bid_meanwhile)
        assert await escrow.sign(REF, "late", 10) is not None, "the bid's, not the stale read"
        assert await escrow.sign(REF, "late", 10) is not None, "and kept"
