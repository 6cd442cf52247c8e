"""What the chain services keep in memory is bounded, with no chain needed (a stand-in
records what would be called): the slasher opens cases for staked signers only and forgets
them once sent or as old as a restart would read back; the caps forget a send once its attempt
is past the resend window; the spend book keeps a few lines and reads the others from sqlite,
its total right throughout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account

from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import Domain
from consensus.verify.messages import Verdict
from node.chain import spending
from node.chain.caps import RESEND_EPOCHS, Caps
from node.chain.errors import ChainError
from node.chain.hook import SettlementHook
from node.chain.services import SLASH_CASES_KEPT_MS
from node.chain.signing import sign_slash
from node.chain.slasher import Slasher
from node.chain.spending import SpendBook
from storage.db import Database

DOMAIN = Domain(chain_id=1, contract=b"\x01" * 20)
WORKER = b"\x02" * 20
AMOUNT = 10**17
REF = TaskRef(job_id=b"\x07" * 16, task=0, attempt=0)
T0 = 10**12
EPOCH_MS = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.sent: list[Any] = []

    def now_ms(self) -> int:
        return self.now

    async def publish(self, topic: str, body: Any) -> None:
        self.sent.append(body)


class Contract:
    """The chain's answers: who is staked; it records the calls and the slashes sent."""

    def __init__(self, staked: set[str]) -> None:
        self.staked, self.calls, self.slashes = staked, 0, 0
        used = SimpleNamespace(call=lambda: False)
        self.contract = SimpleNamespace(functions=SimpleNamespace(evidenceUsed=lambda _e: used))

    def stake_of(self, signer: str) -> dict[str, int]:
        return {"bonded": AMOUNT if signer in self.staked else 0}

    async def call(self, fn: Any) -> Any:
        self.calls += 1
        return fn(self)

    async def submit(self, name: str, args: list[Any]) -> None:
        self.slashes += 1


def wallets(n: int) -> list[tuple[bytes, str]]:
    """``n`` keys with their lower-case addresses, the lowest first."""
    keys = [Account.create().key for _ in range(n)]
    return sorted(((k, Account.from_key(k).address.lower()) for k in keys), key=lambda p: p[1])


def failing(key: bytes, evidence: bytes) -> Verdict:
    return Verdict(
        expires_ms=2**40, nonce=b"n" * 16, ref=REF, worker="12D3worker", attestation=evidence,
        passed=False, sampled=[0], seed=b"\x01" * 32, evidence=b"\x02" * 32, reason="replay",
        worker_address=WORKER, slash_wei=AMOUNT, slash_sig=sign_slash(key, DOMAIN, WORKER,
                                                                      AMOUNT, evidence),
    )  # fmt: skip


def slasher(me: str, staked: set[str], clock: Clock) -> tuple[Slasher, Contract]:
    contract = Contract(staked)
    chain = SimpleNamespace(service=contract, domain=DOMAIN, address=me)
    s = Slasher(chain, clock, "verdicts")  # type: ignore[arg-type]
    s.quorum, s.min_stake = 2, AMOUNT
    return s, contract


async def test_a_stranger_opens_no_case_and_old_cases_are_forgotten() -> None:
    (low, low_addr), (high, high_addr), (stranger, _) = wallets(3)
    clock = Clock()
    s, _ = slasher(high_addr, {low_addr, high_addr}, clock)  # not the sender: cases stay open
    assert not await s.on_failing(failing(stranger, b"\xaa" * 32))
    assert s.cases == {}, "an unstaked signer opens nothing"
    assert not await s.on_failing(failing(low, b"\xbb" * 32))
    clock.now = T0 + SLASH_CASES_KEPT_MS
    assert not await s.on_failing(failing(high, b"\xbb" * 32)), "a quorum, not its turn"
    assert [len(signers) for signers in s.cases.values()] == [2], "kept its full time"
    clock.now += 1
    assert not await s.on_failing(failing(low, b"\xcc" * 32))
    assert list(s.cases) == [(WORKER, AMOUNT, b"\xcc" * 32)], "older than a restart reads"
    assert list(s.opened_ms) == list(s.cases)


async def test_a_sent_case_is_closed_and_its_late_verdicts_cost_nothing() -> None:
    (low, low_addr), (high, high_addr) = wallets(2)
    clock = Clock()
    s, contract = slasher(low_addr, {low_addr, high_addr}, clock)
    evidence = b"\xaa" * 32
    assert not await s.on_failing(failing(low, evidence))
    assert await s.on_failing(failing(high, evidence)), "the lowest signer sends it"
    assert contract.slashes == 1 and s.cases == {} and s.opened_ms == {}
    calls = contract.calls
    clock.now = T0 + SLASH_CASES_KEPT_MS
    assert not await s.on_failing(failing(high, evidence)), "once"
    assert contract.calls == calls and s.cases == {}, "no chain call, no case reopened"
    clock.now += 1
    assert not await s.on_failing(failing(low, b"\xbb" * 32))
    assert s.sent == {}, "a restart would not read it back either"


async def test_a_slash_cut_off_by_an_outage_is_sent_with_the_next_verdict() -> None:
    (low, low_addr), (high, high_addr), (third, third_addr) = wallets(3)
    s, contract = slasher(low_addr, {low_addr, high_addr, third_addr}, Clock())
    evidence = b"\xaa" * 32
    assert not await s.on_failing(failing(low, evidence))

    async def outage(name: str, args: list[Any]) -> None:
        raise ChainError("the endpoint is down")

    contract.submit = outage  # type: ignore[method-assign]
    with pytest.raises(ChainError):
        await s.on_failing(failing(high, evidence))
    assert s.sent == {} and len(s.cases[(WORKER, AMOUNT, evidence)]) == 2, "case kept open"
    del contract.submit  # the chain is back
    assert await s.on_failing(failing(third, evidence)), "retried by the next verdict"
    assert contract.slashes == 1


class Attempts:
    """The attempts the caps query sees: each row ended at ``ended_ms``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def query(self, sql: str, params: tuple[int]) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ended_ms"] >= params[0]]


def caps_over(db: Attempts, clock: Clock) -> Caps:
    chain = SimpleNamespace(settings=SimpleNamespace(epoch_s=EPOCH_MS // 1000))
    caps = Caps(chain, db, clock)  # type: ignore[arg-type]

    async def cap(ref: TaskRef, worker: str, payable: int) -> TaskRef:
        return ref

    caps._cap = cap  # type: ignore[method-assign,assignment]
    return caps


def ended(db: Attempts, task: int, ended_ms: int) -> TaskRef:
    row = {"job_id": REF.job_id, "idx": task, "attempt": 0, "vouched_wei": "10",
           "payable_wei": "4", "address": "0x" + "03" * 20, "ended_ms": ended_ms}  # fmt: skip
    db.rows.append(row)
    return replace(REF, task=task)


async def test_a_cap_is_forgotten_once_past_the_resend_window() -> None:
    clock, db = Clock(), Attempts()
    caps = caps_over(db, clock)
    for task in range(3):
        ended(db, task, T0)
    assert await caps.send_due() == 3
    clock.now = T0 + EPOCH_MS // 2 - 1
    assert await caps.send_due() == 0, "sent a moment ago"
    clock.now += 1
    assert await caps.send_due() == 3, "again every half epoch"
    last = clock.now
    clock.now = T0 + RESEND_EPOCHS * EPOCH_MS + 1
    assert await caps.send_due() == 0 and set(caps.sent_ms.values()) == {last}
    clock.now = last + RESEND_EPOCHS * EPOCH_MS + 1
    assert await caps.send_due() == 0 and caps.sent_ms == {}, "the query never returns them"


async def test_caps_are_forgotten_in_the_order_they_were_last_sent() -> None:
    clock, db = Clock(), Attempts()
    caps = caps_over(db, clock)
    first = ended(db, 0, T0)
    assert await caps.send_due() == 1
    clock.now = T0 + 20_000
    ended(db, 1, clock.now)
    assert await caps.send_due() == 1
    clock.now = T0 + EPOCH_MS // 2
    assert await caps.send_due() == 1, "the first one again, now the latest sent"
    clock.now = T0 + 20_000 + RESEND_EPOCHS * EPOCH_MS + 1
    assert await caps.send_due() == 0 and caps.sent_ms == {first: T0 + EPOCH_MS // 2}


async def test_the_spend_book_keeps_few_lines_and_its_total_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spending, "LINES_CACHED", 2)
    key = Account.create().key
    chain = SimpleNamespace(domain=DOMAIN, address=Account.from_key(key).address,
                            hook=SettlementHook(DOMAIN, key))  # fmt: skip
    worker = "0x" + "ab" * 20
    refs = [replace(REF, task=i) for i in range(5)]
    async with await Database.open(tmp_path / "node.db") as db:
        book = SpendBook(chain, db)  # type: ignore[arg-type]
        for i, ref in enumerate(refs):
            await book.sign(ref, worker, 100 * (i + 1))
        assert len(book.lines) == 2 and book.total == 1500
        assert (await book.sign(refs[0], worker, 50)).cumulative == 1500, "a lower one: never"
        assert (await book.sign(refs[1], worker, 250)).cumulative == 1550, "raised by 50"
        await db.execute(  # a row from before deployments were counted, larger than its twin
            "INSERT INTO settle_spend (job_id, idx, attempt, worker, amount_wei, deployment) "
            "VALUES (?, 2, 0, ?, '900', '')",
            (REF.job_id, worker),
        )
        restarted = SpendBook(chain, db)  # type: ignore[arg-type]
        assert (await restarted.current()).cumulative == 2150
        assert (await restarted.sign(refs[2], worker, 500)).cumulative == 2150, "900 counts"
        assert restarted.lines == {(REF.job_id, 2, 0, worker): 900}
