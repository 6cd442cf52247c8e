"""The requester's spend: with every chain voucher it signs an EIP-712 ``Spend`` of everything
it ever vouched, which bounds what epoch anchors may debit its pool in all (the contract
refuses more, so a lying or second anchorer cannot drain the pool beyond the vouchers).

``cumulative`` is the sum over its lines (job, task attempt, worker) of the largest voucher it
signed. Each line's largest is written to ``settle_spend`` before the voucher that raises it
leaves, so a restart (even after kill -9) adds them up again and never signs less. A cap that
closes a line lower (``node/chain/caps.py``) does not lower it: the larger voucher was signed.
Lines count per deployment (chain id and contract): a node moved to a new contract starts its
spend from what it vouches there, rather than authorising the old contract's total again.

Only the total and the lines vouched lately are in memory (a requester vouches every second on
each running attempt, so those are the lines it signs for); any other line is read from
``settle_spend``, which holds them all.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio

from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Spend
from storage.db import Database

if TYPE_CHECKING:
    from node.chain.node import ChainNode

Line = tuple[bytes, int, int, str]  # job id, task, attempt, worker's chain address
LINES_CACHED = 4096  # far more than the attempts a requester runs at once


class SpendBook:
    def __init__(self, chain: ChainNode, db: Database) -> None:
        self.chain, self.db = chain, db
        self.deployment = f"{chain.domain.chain_id}:0x{chain.domain.contract.hex()}"
        self.lines: OrderedDict[Line, int] = OrderedDict()  # the latest signed for, last
        self.total = 0
        self._summed = False  # the total is summed from sqlite at the first signature
        self._loading = trio.Lock()
        self._writing = trio.Lock()
        self._signed: Spend | None = None  # the latest, reused while the total stays

    async def sign(self, ref: TaskRef, worker: str, amount_wei: int) -> Spend:
        """The ``Spend`` to send with a voucher of ``amount_wei`` for ``ref`` to ``worker``."""
        await self._sum_once()
        line = (ref.job_id, ref.task, ref.attempt, worker.lower())
        # One signer at a time, and the row written before the total counts it: a spend never
        # covers an increase that a kill -9 could still lose.
        async with self._writing:
            before = await self._line(line)
            if amount_wei > before:
                await self.db.execute(
                    "INSERT INTO settle_spend (job_id, idx, attempt, worker, amount_wei, "
                    "deployment) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(job_id, idx, attempt, worker, deployment) DO UPDATE "
                    "SET amount_wei = excluded.amount_wei",
                    (*line, str(amount_wei), self.deployment),
                )
                self._cache(line, amount_wei)
                self.total += amount_wei - before
            return self._latest()

    async def current(self) -> Spend:
        """The spend of everything vouched so far (sent with a cap, which vouches nothing)."""
        await self._sum_once()
        async with self._writing:
            return self._latest()

    def _latest(self) -> Spend:
        """The signed spend of ``total``, signed again only when the total moved."""
        if self._signed is None or self._signed.cumulative != self.total:
            self._signed = self.chain.hook.spend(self.chain.address, self.total)
        return self._signed

    async def _line(self, line: Line) -> int:
        """The largest voucher signed on ``line``: cached, else from sqlite (a row from before
        the upgrade may have a newer one too)."""
        if line in self.lines:
            self.lines.move_to_end(line)
            return self.lines[line]
        rows = await self.db.query(
            "SELECT amount_wei FROM settle_spend WHERE job_id = ? AND idx = ? AND attempt = ? "
            "AND worker = ? AND deployment IN ('', ?)",
            (*line, self.deployment),
        )
        amount = max((int(r["amount_wei"]) for r in rows), default=0)
        self._cache(line, amount)
        return amount

    def _cache(self, line: Line, amount: int) -> None:
        self.lines[line] = amount
        self.lines.move_to_end(line)
        while len(self.lines) > LINES_CACHED:
            self.lines.popitem(last=False)

    async def _sum_once(self) -> None:
        async with self._loading:
            if not self._summed:
                self.total, self._summed = await self.db.transaction(self._sum), True

    def _sum(self, conn: sqlite3.Connection) -> int:
        """The sum over lines of each one's largest row, read row by row in key order (a
        line's rows are adjacent), so the table is never in memory at once."""
        rows = conn.execute(
            "SELECT job_id, idx, attempt, worker, amount_wei FROM settle_spend "
            "WHERE deployment IN ('', ?) ORDER BY job_id, idx, attempt, worker",
            (self.deployment,),
        )
        total, line, largest = 0, None, 0
        for r in rows:
            this = (bytes(r["job_id"]), r["idx"], r["attempt"], r["worker"])
            if this != line:
                total, line, largest = total + largest, this, 0
            largest = max(largest, int(r["amount_wei"]))
        return total + largest
