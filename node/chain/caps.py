"""The requester's caps: a lost worker is paid up to the checkpoint its task resumed from.

Vouchers run ahead of checkpoints (one every second, a checkpoint every segment), so a worker
that disappears mid-task holds vouchers for seconds whose work was lost and redone elsewhere.
The market already counts such an attempt as payable only up to the checkpoint the requester
kept (``consensus.market.meter.payable_after_failover``); this service tells the anchorers, in
a :class:`~consensus.settlement.messages.VoucherCap` signed with the requester's chain key, so
that the chain pays no more either. Each cap is gossiped on ``anchors`` when its attempt is
closed and again every half epoch for :data:`RESEND_EPOCHS` epochs (gossip is lossy; anchorers
keep a cap in their saved state, so repeats cost nothing).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from consensus.envelope import new_nonce
from consensus.kinds import Wei
from consensus.market.messages import TaskRef
from consensus.settlement.messages import VoucherCap
from node.chain.horizon import drop_before
from node.chain.payee import ANCHORS, TTL_MS
from node.chain.spending import SpendBook
from storage.db import Database

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.node import ChainNode
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
RESEND_EPOCHS = 3


class Caps:
    def __init__(
        self, chain: ChainNode, db: Database, net: MarketNet, spending: SpendBook | None = None
    ) -> None:
        self.chain, self.db, self.net, self.spending = chain, db, net, spending
        self.sent_ms: dict[TaskRef, int] = {}  # the latest sent last

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.send_due()
            except Exception as exc:  # a bad row must not stop the others' caps for good
                log.warning("caps: %r", exc)
            await trio.sleep(self.chain.settings.poll_s)

    async def send_due(self) -> int:
        """Gossips every recent cap not sent within half an epoch; how many went out."""
        now, epoch_ms = self.net.now_ms(), self.chain.settings.epoch_s * 1000
        horizon = now - RESEND_EPOCHS * epoch_ms
        # Sent before the horizon: their attempts ended before it, so the query never returns
        # them again.
        drop_before(self.sent_ms, horizon)
        rows = await self.db.query(
            "SELECT a.job_id, a.idx, a.attempt, a.vouched_wei, a.payable_wei, p.address "
            "FROM attempts a JOIN settle_peers p ON p.peer_id = a.worker "
            "WHERE a.payable_wei IS NOT NULL AND a.ended_ms >= ?",
            (horizon,),
        )
        sent = 0
        for row in rows:
            ref = TaskRef(job_id=bytes(row["job_id"]), task=row["idx"], attempt=row["attempt"])
            payable = int(row["payable_wei"])
            if payable >= int(row["vouched_wei"]) or now < self.sent_ms.get(ref, 0) + epoch_ms // 2:
                continue  # paid as vouched (no failover), or sent a moment ago
            await self.net.publish(ANCHORS, await self._cap(ref, row["address"], payable))
            self.sent_ms.pop(ref, None)
            self.sent_ms[ref] = now
            sent += 1
        return sent

    async def _cap(self, ref: TaskRef, worker: str, payable: int) -> VoucherCap:
        cap_sig, voucher_sig = self.chain.hook.cap(ref, worker, payable)
        spend = None if self.spending is None else await self.spending.current()
        return VoucherCap(
            expires_ms=self.net.now_ms() + TTL_MS,
            nonce=new_nonce(),
            ref=ref,
            requester=bytes.fromhex(self.chain.address[2:]),
            worker=bytes.fromhex(worker[2:]),
            amount_wei=Wei(payable),
            cap_sig=cap_sig,
            voucher_sig=voucher_sig,
            spend_wei=None if spend is None else Wei(spend.cumulative),
            spend_sig=None if spend is None else spend.signature,
        )
