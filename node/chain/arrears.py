"""The worker's watch on requesters that leave its lines unanchored (the rule and why:
:mod:`consensus.settlement.arrears`).

Every ``chain.poll_s`` it reads the chain's anchor count and, for each requester with a line
running or waiting, its pool's ``debited``; running lines get that snapshot in sqlite (so a
restart judges exactly as before), ended lines are judged by their last one. A line that
ended less than ``hold_ms`` ago counts as running: an anchoring sentry holds a task back
until its verdict, for at most the verdict timeout, and anchors passed meanwhile say nothing
about the requester. Requesters found in arrears are handed to ``on_change`` (the worker
stops their tasks and its bidder declines their work, naming the reason) and shown in
``idlegrid settlement status``. With ``chain.arrears_anchors = 0`` it does not run at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from consensus.settlement.arrears import Arrears, Line, in_arrears
from storage.db import Database

if TYPE_CHECKING:
    from node.chain.node import ChainNode

log = logging.getLogger(__name__)
WINDOW_MS = 7 * 24 * 3600 * 1000  # ended lines judged this long; then the block lapses

Blocked = dict[str, str]  # requester peer id or lower-case address -> why we decline it


class ArrearsWatch:
    def __init__(
        self, chain: ChainNode, db: Database, now_ms: Callable[[], int], hold_ms: int = 0
    ) -> None:
        self.chain, self.db, self.now_ms, self.hold_ms = chain, db, now_ms, hold_ms
        self.found: dict[str, Arrears] = {}
        self.on_change: Callable[[Blocked], None] | None = None

    async def run(self) -> None:
        if self.chain.settings.arrears_anchors <= 0:
            return  # turned off: no chain reads every poll for nothing
        while True:
            try:
                await self.step()
            except Exception as exc:  # an outage: judge again on the next look
                log.warning("requesters' anchoring not checked: %r", exc)
            await trio.sleep(self.chain.settings.poll_s)

    async def step(self) -> dict[str, Arrears]:
        """One look at the chain: refresh running lines' snapshots, judge the ended ones."""
        now_ms = self.now_ms()
        held_since = now_ms - self.hold_ms  # ended after this: may still wait for a verdict
        rows = await self.db.query(
            "SELECT requester, requester_peer, amount_wei, capped_wei, shown_wei, "
            "anchors_before, debited_before, ended_ms FROM settle_vouchers "
            "WHERE ended_ms IS NULL OR ended_ms > ? OR (ended_ms >= ? "
            "AND anchors_before IS NOT NULL AND CAST(shown_wei AS INTEGER) < "
            "MIN(CAST(amount_wei AS INTEGER), CAST(COALESCE(capped_wei, amount_wei) AS INTEGER)))",
            (held_since, now_ms - WINDOW_MS),
        )
        live = [r for r in rows if r["ended_ms"] is None or r["ended_ms"] > held_since]
        if not rows and not self.found:
            return self.found
        who = sorted({r["requester"] for r in rows})
        anchors, debited = await self.chain.service.call(
            lambda c: (c.epoch_count(), {r: c.pool_of(r)["debited"] for r in who})
        )
        for requester in {r["requester"] for r in live}:
            await self.db.execute(  # a line ending meanwhile keeps its earlier snapshot
                "UPDATE settle_vouchers SET anchors_before = ?, debited_before = ? "
                "WHERE (ended_ms IS NULL OR ended_ms > ?) AND requester = ?",
                (anchors, str(debited[requester]), held_since, requester),
            )
        lines = [_line(r) for r in rows if r["ended_ms"] is not None
                 and r["ended_ms"] <= held_since and r["anchors_before"] is not None]  # fmt: skip
        now = {r.lower(): d for r, d in debited.items()}
        found = in_arrears(lines, now, anchors, self.chain.settings.arrears_anchors)
        self._publish(found)
        return found

    def blocked(self) -> Blocked:
        """Whom the bidder declines: each requester in arrears, by address and by peer."""
        out: Blocked = {}
        for arrears in self.found.values():
            why = arrears.reason()
            out[arrears.requester] = why
            out.update(dict.fromkeys(arrears.peers, why))
        return out

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "requester": a.requester,
                "peers": sorted(a.peers),
                "waiting_wei": str(a.waiting_wei),
                "anchors": a.anchors,
            }
            for a in self.found.values()
        ]

    def _publish(self, found: dict[str, Arrears]) -> None:
        before, self.found = self.found, found
        for requester in found.keys() - before.keys():
            log.warning("declining a requester's work: %s", found[requester].reason())
        for requester in before.keys() - found.keys():
            log.info("requester no longer in arrears", extra={"requester": requester})
        if found != before and self.on_change is not None:
            self.on_change(self.blocked())


def due_wei(row: Any) -> int:
    """What a line of ``settle_vouchers`` is owed: its voucher, or a lower cap of its
    requester's."""
    amount, capped = int(row["amount_wei"]), row["capped_wei"]
    return amount if capped is None else min(amount, int(capped))


def _line(row: Any) -> Line:
    return Line(
        requester=row["requester"].lower(),
        peer=row["requester_peer"],
        amount_wei=due_wei(row),  # a line its requester capped (a failover) is due the cap
        shown_wei=int(row["shown_wei"]),
        anchors_before=int(row["anchors_before"]),
        debited_before=int(row["debited_before"]),
    )
