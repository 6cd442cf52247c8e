"""Telling a worker that its line was capped, when it resends a voucher above the cap.

A requester gossips its cap on a lost attempt for a few epochs (:mod:`node.chain.caps`). A
worker away all that time (killed, cut off) never hears it: it comes back and resends its
voucher every half epoch for up to a day, and anchorers refuse each one. So an anchorer that
took the cap sends it again when it refuses such a voucher, at most once an epoch per line,
and the worker stops (its payee takes a cap from anyone: the requester's signatures are what
it checks). The refusals are logged as often, not at every resend. The caps taken are kept
in sqlite too (the newest :data:`KEPT`), so a restarted anchorer still sends them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from consensus.codec import decode, encode
from consensus.envelope import new_nonce
from consensus.kinds import from_wire, to_wire
from consensus.settlement.epoch import Line
from consensus.settlement.messages import VoucherCap
from node.chain.payee import ANCHORS, TTL_MS

if TYPE_CHECKING:
    from node.market.net import MarketNet
    from storage.db import Database

KEPT = 4096  # caps kept to send again: one per lost attempt, the latest taken last


@dataclass
class CapEcho:
    net: MarketNet
    db: Database
    epoch_ms: int
    # line -> (the cap taken, when it or a refusal of its line was last told)
    kept: OrderedDict[Line, tuple[VoucherCap | None, int]] = field(default_factory=OrderedDict)

    async def load(self) -> None:
        """Takes back the caps taken before a restart, oldest first (none told yet)."""
        rows = await self.db.query(
            "SELECT job, task, worker, cap FROM settle_caps_taken ORDER BY taken_ms, job, task"
        )
        for row in rows:
            cap = from_wire(VoucherCap, decode(bytes(row["cap"])), "cap")
            line = (bytes(row["job"]), bytes(row["task"]), bytes(row["worker"]))
            self.kept[line] = (cap, -self.epoch_ms)
            self._keep(line)

    async def took(self, line: Line, cap: VoucherCap) -> None:
        """Keeps the cap on ``line`` that the anchoring machine took, in sqlite too."""
        self.kept[line] = (cap, self.kept.get(line, (None, -self.epoch_ms))[1])
        self._keep(line)
        await self.db.execute(
            "INSERT OR REPLACE INTO settle_caps_taken VALUES (?, ?, ?, ?, ?)",
            (*line, encode(to_wire(cap)), self.net.now_ms()),
        )
        await self.db.execute(
            "DELETE FROM settle_caps_taken WHERE taken_ms < (SELECT taken_ms FROM "
            "settle_caps_taken ORDER BY taken_ms DESC LIMIT 1 OFFSET ?)",
            (KEPT - 1,),
        )

    async def refused(self, line: Line) -> bool:
        """A voucher over ``line``'s cap was refused: sends the cap again if an epoch has
        passed since it was last told. True when this refusal is worth a log line."""
        now = self.net.now_ms()
        cap, told_ms = self.kept.get(line, (None, -self.epoch_ms))
        if now < told_ms + self.epoch_ms:
            return False
        self.kept[line] = (cap, now)
        self._keep(line)
        if cap is not None:  # a fresh envelope: the requester's signatures are the same
            await self.net.publish(ANCHORS, replace(cap, expires_ms=now + TTL_MS,
                                                    nonce=new_nonce()))  # fmt: skip
        return True

    def _keep(self, line: Line) -> None:
        self.kept.move_to_end(line)
        while len(self.kept) > KEPT:
            self.kept.popitem(last=False)
