"""The requester's debit audit: dispute a pending anchor that debits our pool more than the
entries it gossiped for us add (``EpochAudits.sol``, kind debit), and void it when its anchorer
does not answer in time.

The entries of a pending anchor come on gossip, a few times in its window; so the check waits
until half the window has passed, and a quarter window since this process first looked at the
anchor (an honest anchorer has sent them at least once in either). Gossip is lossy and an
anchorer may restart mid-window, so a debit the heard entries do not cover is disputed only
when the pool's debits in all also exceed what we owe by our own records (each line's largest
voucher, or the cap we put on it): a false dispute costs both sides gas, and an anchorer that
cannot answer in time (a short window, a restart) loses its bond. An anchorer
that withheld our entries must show them on chain to answer: withholding no longer hides a
debit. Stateless on purpose: the chain says whether our dispute is open, so a restart (even a
kill -9 between a send and anything else) picks up where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from consensus.settlement.audits import DEBIT
from consensus.settlement.epoch import Entry, Line
from node.chain.audit_calls import ANSWERED, SumDispute
from node.chain.errors import ChainError

if TYPE_CHECKING:
    from node.chain.node import ChainNode

log = logging.getLogger(__name__)


class DebitWatch:
    def __init__(self, chain: ChainNode, me: bytes) -> None:
        self.chain, self.me = chain, me
        self.disputed: set[int] = set()  # epochs whose debit we disputed (this process)
        self.seen: dict[int, int] = {}  # the latest epoch -> chain time we first looked at it
        self.twice: set[int] = set()  # epochs voided (or being) for a line counted twice
        self.voided = 0

    async def step(
        self, anchor: dict[str, Any], now: int, heard: list[tuple[Entry, list[bytes]]],
        owed: Callable[[], Awaitable[int]], sums: list[SumDispute],
    ) -> None:  # fmt: skip
        """Looks at the latest anchor (``anchor``, as read) at chain time ``now``: ``heard``
        is our entries of it with their proofs; ``owed`` reads what we owe in all by our own
        records (each line's largest voucher, or its cap); ``sums`` is every sum dispute
        raised against it (answered or not)."""
        if anchor["state"] != "pending":
            return
        index, service = int(anchor["epoch"]), self.chain.service
        if now < int(anchor["open_until"]):
            await self._void_twice(index, heard)
        entries = [e for e, _ in heard]
        raised = [d for d in sums if d.kind == DEBIT and d.party == self.me]
        for d in raised:
            if d.answer_by != ANSWERED and now >= d.answer_by:
                await self._void(d)
        if raised or index in self.disputed:  # once per anchor, across restarts too
            return
        window = int(await service.call(lambda c: c.dispute_window_s()))
        deadline = int(anchor["dispute_deadline"])
        self.seen = {index: self.seen.get(index, now)}  # entries heard since; a restart anew
        seen = self.seen[index]
        if not max(deadline - window // 2, seen + window // 4) <= now < deadline:
            return
        me = "0x" + self.me.hex()
        debits = await service.call(lambda c: c.anchor_debits(index))
        debited = sum(a for r, a in debits if r.lower() == me)
        added = sum(e.added for e in entries if e.requester == self.me)
        if debited <= added:
            return
        pool = await service.call(lambda c: c.pool_of(me))
        if int(pool["debited"]) <= await owed():
            return  # entries unheard (lost, or the anchorer restarted), but nothing overpaid
        self.disputed.add(index)
        what = {"epoch": index, "debited_wei": str(debited), "entries_wei": str(added),
                "debited_in_all_wei": str(pool["debited"])}  # fmt: skip
        log.warning("anchor debits our pool more than its entries add, and beyond what we "
                    "owe: disputing", extra=what)  # fmt: skip
        try:
            await service.call(lambda c: c.dispute_debit(index))
        except ChainError as exc:
            self.disputed.discard(index)
            log.warning("debit dispute not sent: %s", exc)

    async def _void_twice(self, index: int, heard: list[tuple[Entry, list[bytes]]]) -> None:
        """Voids anchor ``index`` at once if two entries heard name one line of ours: we
        would pay that voucher twice (each entry adds its amount over ``previous``)."""
        first: dict[Line, tuple[Entry, list[bytes]]] = {}
        for e, proof in heard:
            other = first.setdefault(e.line, (e, proof))
            if other[0] == e or index in self.twice:
                continue
            self.twice.add(index)
            log.warning("anchor has two entries for one line of ours: voiding",
                        extra={"epoch": index, "job": "0x" + e.job.hex()})  # fmt: skip
            try:
                await self.chain.service.call(
                    lambda c: c.void_conflict(index, (e, proof), (index, *other))  # noqa: B023
                )
            except ChainError as exc:
                self.twice.discard(index)
                log.warning("void of a line counted twice failed: %s", exc)
            return

    async def _void(self, d: Any) -> None:
        try:
            await self.chain.service.call(lambda c: c.void_sum(d))
        except ChainError as exc:
            log.warning("void of an unanswered debit dispute failed: %s", exc)
            return
        self.voided += 1
        log.warning("anchor voided: its anchorer did not show entries for our debit",
                    extra={"epoch": d.index, "debited_wei": str(d.amount)})  # fmt: skip
