"""The requester's spend: with every chain voucher it signs an EIP-712 ``Spend`` of everything
it ever vouched, which bounds what epoch anchors may debit its pool in all (the contract
refuses more, so a lying or second anchorer cannot drain the pool beyond the vouchers).

``cumulative`` is the sum over its lines (job, task attempt, worker) of the largest voucher it
signed. Each line's largest is written to ``settle_spend`` before the voucher that raises it
leaves, so a restart (even after kill -9) adds them up again and never signs less. A cap that
closes a line lower (``node/chain/caps.py``) does not lower it: the larger voucher was signed.
Lines count per deployment (chain id and contract): a node moved to a new contract starts its
spend from what it vouches there, rather than authorising the old contract's total again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Spend
from storage.db import Database

if TYPE_CHECKING:
    from node.chain.node import ChainNode

Line = tuple[bytes, int, int, str]  # job id, task, attempt, worker's chain address


class SpendBook:
    def __init__(self, chain: ChainNode, db: Database) -> None:
        self.chain, self.db = chain, db
        self.deployment = f"{chain.domain.chain_id}:0x{chain.domain.contract.hex()}"
        self.lines: dict[Line, int] | None = None  # read from sqlite at the first signature
        self.total = 0
        self._loading = trio.Lock()
        self._writing = trio.Lock()
        self._signed: Spend | None = None  # the latest, reused while the total stays

    async def sign(self, ref: TaskRef, worker: str, amount_wei: int) -> Spend:
        """The ``Spend`` to send with a voucher of ``amount_wei`` for ``ref`` to ``worker``."""
        lines = await self._lines()
        line = (ref.job_id, ref.task, ref.attempt, worker.lower())
        # One signer at a time, and the row written before the total counts it: a spend never
        # covers an increase that a kill -9 could still lose.
        async with self._writing:
            before = lines.get(line, 0)
            if amount_wei > before:
                await self.db.execute(
                    "INSERT INTO settle_spend (job_id, idx, attempt, worker, amount_wei, "
                    "deployment) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(job_id, idx, attempt, worker, deployment) DO UPDATE "
                    "SET amount_wei = excluded.amount_wei",
                    (*line, str(amount_wei), self.deployment),
                )
                lines[line] = amount_wei
                self.total += amount_wei - before
            return self._latest()

    async def current(self) -> Spend:
        """The spend of everything vouched so far (sent with a cap, which vouches nothing)."""
        await self._lines()
        async with self._writing:
            return self._latest()

    def _latest(self) -> Spend:
        """The signed spend of ``total``, signed again only when the total moved."""
        if self._signed is None or self._signed.cumulative != self.total:
            self._signed = self.chain.hook.spend(self.chain.address, self.total)
        return self._signed

    async def _lines(self) -> dict[Line, int]:
        async with self._loading:
            if self.lines is None:
                rows = await self.db.query(
                    "SELECT * FROM settle_spend WHERE deployment IN ('', ?)", (self.deployment,)
                )
                self.lines = {}
                for r in rows:  # a line from before the upgrade may have a newer row too
                    line = (bytes(r["job_id"]), r["idx"], r["attempt"], r["worker"])
                    self.lines[line] = max(self.lines.get(line, 0), int(r["amount_wei"]))
                self.total = sum(self.lines.values())
            return self.lines
