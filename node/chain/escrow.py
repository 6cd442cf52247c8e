"""The requester's side of settlement: escrow per job, and the chain twin of every voucher.

Escrow lives in the requester's pool on the contract (``fund``): the pool is what epoch anchors
debit, so it is the escrow the cheap path pays from. When a job is submitted its budget cap is
recorded here (``new``) and funded into the pool (``funded``); once the job has ended, what its
vouchers did not spend is asked back (``leavePool``, state ``leaving``) and taken out after the
contract's unbonding delay (``withdrawPool``, ``returned``). What was vouched stays in the pool
for the anchors to debit. Every step is a row in ``settle_escrow`` and a journaled transaction,
so a restart or a chain outage resumes it.

Limit: the unspent rest is the budget less the vouchers this node SENT; a voucher no worker ever
anchors stays in the pool (not lost: ``idlegrid wallet fund --leave`` takes it back).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import trio

from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Spend
from node.chain.client import is_transport
from node.chain.errors import ChainReverted, survive
from node.chain.spending import SpendBook
from storage.db import Database

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.client import TxResult
    from node.chain.node import ChainNode

log = logging.getLogger(__name__)
ENDED = ("done", "attested", "verified", "settled", "failed", "cancelled")
PEERS_CACHED = 4096  # far more than the workers a requester pays at once


class Escrow:
    def __init__(self, chain: ChainNode, db: Database, poll_s: float) -> None:
        self.chain, self.db, self.poll_s = chain, db, poll_s
        # peer id -> chain address (from bids), the latest used last; all are in settle_peers:
        # any bidder adds one, so only those bidding or paid lately are kept here.
        self._workers: OrderedDict[str, str] = OrderedDict()
        self.spending = SpendBook(chain, db)
        self._wake = trio.Event()

    # --- the market's hooks ---------------------------------------------------------------

    async def job_submitted(self, job_id: bytes, budget_wei: int, now_ms: int) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO settle_escrow (job_id, funded_wei, state, updated_ms) "
            "VALUES (?, ?, 'new', ?)",
            (job_id, str(budget_wei), now_ms),
        )
        self._wake.set()

    async def remember_worker(self, peer: str, address: str) -> None:
        if not address:
            return
        if self._workers.get(peer) == address:
            self._workers.move_to_end(peer)
            return
        await self.db.execute(
            "INSERT INTO settle_peers (peer_id, address) VALUES (?, ?) "
            "ON CONFLICT(peer_id) DO UPDATE SET address = excluded.address",
            (peer, address),
        )
        self._cache(peer, address)  # after the row: whatever is evicted is still in sqlite

    async def sign(
        self, ref: TaskRef, worker_peer: str, amount_wei: int
    ) -> tuple[bytes, Spend] | None:
        """The EIP-712 twin of a voucher to ``worker_peer`` and the spend that goes with it
        (recorded first: see :mod:`node.chain.spending`); None if it gave no address."""
        address = await self.address_of(worker_peer)
        if address is None:
            return None
        spend = await self.spending.sign(ref, address, amount_wei)
        return self.chain.hook.sign(ref, address, amount_wei), spend

    async def address_of(self, peer: str) -> str | None:
        """``peer``'s chain address: cached, else read from sqlite (it bid before a restart, or
        before many others bid); none is cached as "", so it is not read at every voucher."""
        address = self._workers.get(peer)
        if address is None:
            row = await self.db.query_one(
                "SELECT address FROM settle_peers WHERE peer_id = ?", (peer,)
            )
            # a bid remembered during the read is newer than the row read
            address = self._workers.get(peer, "" if row is None else str(row["address"]))
        self._cache(peer, address)
        return address or None

    def _cache(self, peer: str, address: str) -> None:
        self._workers[peer] = address
        self._workers.move_to_end(peer)
        while len(self._workers) > PEERS_CACHED:
            self._workers.popitem(last=False)

    def job_changed(self) -> None:
        self._wake.set()

    # --- the service ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await survive(self.step, "escrow", log)
            with trio.move_on_after(self.poll_s):
                await self._wake.wait()
            self._wake = trio.Event()

    async def step(self) -> None:
        """Moves every escrow row one step where it can."""
        for row in await self.db.query("SELECT * FROM settle_escrow WHERE state = 'new'"):
            await self._fund(row["job_id"], int(row["funded_wei"]))
        ended = await self.db.query(
            "SELECT e.job_id, e.funded_wei FROM settle_escrow e JOIN jobs j USING (job_id) "
            "WHERE e.state = 'funded' AND j.state IN (?, ?, ?, ?, ?, ?)",
            ENDED,
        )
        for row in ended:
            await self._give_back(row["job_id"], int(row["funded_wei"]))
        if await self.db.query("SELECT 1 FROM settle_escrow WHERE state = 'leaving' LIMIT 1"):
            await self._withdraw()

    async def _fund(self, job_id: bytes, amount: int) -> None:
        if amount > 0:
            if await self._short(job_id, amount):
                return
            if await self._dry(await self.chain.service.pay("fund", [], amount)):
                return
        await self._set(job_id, "funded")
        log.info("escrow funded", extra={"job": job_id.hex(), "wei": str(amount)})

    async def _short(self, job_id: bytes, amount: int) -> bool:
        """The wallet holds less than ``amount`` (of the token, on a token deployment): the
        fund would fail, so it waits for the next poll. Unknown during an outage: the fund is
        then journaled and waits the outage out like any write."""
        try:
            held = await self.chain.service.call(lambda c: c.balance())
        except Exception as exc:
            if not is_transport(exc):
                raise
            return False
        if held < amount:
            log.warning(
                "escrow: job %s needs %d, the wallet holds %d (of chain.token's asset)",
                job_id.hex(), amount, held,
            )  # fmt: skip
        return held < amount

    async def _give_back(self, job_id: bytes, funded: int) -> None:
        rows = await self.db.query("SELECT vouched_wei FROM attempts WHERE job_id = ?", (job_id,))
        unspent = funded - sum(int(r["vouched_wei"]) for r in rows)
        if unspent <= 0:
            await self._set(job_id, "returned")
            return
        if await self._dry(await self.chain.service.submit("leavePool", [unspent])):
            return
        await self.db.execute(
            "UPDATE settle_escrow SET state = 'leaving', returned_wei = ? WHERE job_id = ?",
            (str(unspent), job_id),
        )
        log.info("escrow leaving", extra={"job": job_id.hex(), "wei": str(unspent)})

    async def _withdraw(self) -> None:
        pool = await self.chain.service.call(lambda c: c.pool_of())
        now = await self.chain.service.call(lambda c: c.chain.now())
        if pool["leaving"] and now < pool["leave_at"]:
            return
        if pool["leaving"]:
            try:
                if await self._dry(await self.chain.service.submit("withdrawPool", [])):
                    return
            except ChainReverted as exc:
                log.warning("escrow: withdrawPool refused: %s", exc)
                return
        await self.db.execute("UPDATE settle_escrow SET state = 'returned' WHERE state = 'leaving'")
        log.info("escrow returned", extra={"wei": str(pool["leaving"])})

    async def _dry(self, result: TxResult | None) -> bool:
        """chain.dry_run: the transaction was only shown (logged); the row stays where it is."""
        return result is not None and result.dry_run

    async def _set(self, job_id: bytes, state: str) -> None:
        await self.db.execute(
            "UPDATE settle_escrow SET state = ? WHERE job_id = ?", (state, job_id)
        )

    async def status(self) -> dict[str, Any]:
        jobs: dict[str, dict[str, Any]] = {}
        for r in await self.db.query("SELECT state, funded_wei, returned_wei FROM settle_escrow"):
            seen = jobs.setdefault(r["state"], {"count": 0, "funded_wei": 0, "returned_wei": 0})
            seen["count"] += 1
            seen["funded_wei"] += int(r["funded_wei"])
            seen["returned_wei"] += int(r["returned_wei"])
        return {"jobs": {state: {k: v if k == "count" else str(v) for k, v in seen.items()}
                         for state, seen in jobs.items()}}  # fmt: skip
