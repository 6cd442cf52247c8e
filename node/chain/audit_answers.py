"""The anchoring sentry's side of the audits (``EpochAudits.sol``): answer every sum dispute of
its pending anchor with the entries it posted, or, when its leaves or its entries are
demanded, with them all, in parts.

Anyone may dispute a worker's earnings leaf or an entry's ``previous``, and a requester its
debit; an anchor whose
dispute goes unanswered is voided and its anchorer's bond slashed. So an anchorer answers each
one, however frivolous, while the answer time runs: an honest epoch always has the entries to
show (:func:`consensus.settlement.audits.answer`), and every line's entry in the last final
epoch that holds it (:func:`node.chain.history.last_entry`). One that it cannot answer is our
bug (or a base that is not the chain's), logged once as an error.

Each open sum dispute is held in the machine's ``open_disputes`` (by its contract key) until it
is answered, so the epoch stays pending, and is answered, for as long as the chain says it is
open; an answer keeps the anchor open another window (``open_until``), and the machine's
window with it. The caller reads the chain time before this step: a dispute mined later than
that read lands after the window it needs (the contract refuses it), so none is missed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consensus.errors import Invalid
from consensus.settlement.audits import EARNINGS, ENTRIES, LEAVES, PREVIOUS, answer
from consensus.settlement.shown import ShownEntries, ShownLeaves
from node.chain.audit_calls import SUM_KINDS, SumDispute, sum_key
from node.chain.errors import ChainError, ChainReverted
from node.chain.history import last_entry

if TYPE_CHECKING:
    from consensus.settlement.anchoring import Anchoring
    from node.chain.service import ChainService
    from storage.db import Database

log = logging.getLogger(__name__)


class SumAnswers:
    """Answers the open sum disputes of the machine's pending anchor, once per step."""

    def __init__(self, service: ChainService, db: Database) -> None:
        self.service, self.db = service, db
        self.answered = 0
        self._refused: set[SumDispute] = set()

    async def step(self, m: Anchoring) -> None:
        if m.state != "pending" or m.pending is None:
            return
        index = m.index
        still = set()
        for d in await self.service.call(lambda c: c.sum_disputes(index)):
            key = sum_key(d.index, d.kind, d.party, d.amount)
            if key not in m.open_disputes:
                m.on_disputed(index, key)  # no entry has this leaf: held, nothing to answer
            if d in self._refused or not await self._answer(m, d):
                still.add(key)
        entries = {e.leaf() for e in m.pending.entries}  # the rest held are sum disputes
        for key in m.open_disputes - entries - still:  # answered (also before a restart)
            m.on_answered(key)
        until = await self.service.call(lambda c: c.anchor()["open_until"])
        m.window_end_ms = max(m.window_end_ms, int(until) * 1000)  # entries may be disputed

    async def _answer(self, m: Anchoring, d: SumDispute) -> bool:
        epoch = m.pending
        assert epoch is not None
        what = {"epoch": d.index, "kind": SUM_KINDS.get(d.kind, str(d.kind)),
                "party": "0x" + d.party.hex(), "amount_wei": str(d.amount)}  # fmt: skip
        try:
            if d.kind == LEAVES:
                shown = await self._show_parts(d.index, ShownLeaves.of_rows(epoch.earnings.items()))
            elif d.kind == ENTRIES:
                shown = await self._show_parts(d.index, ShownEntries.of_rows(epoch.entries))
            elif d.kind == PREVIOUS:
                shown = await self._show_previous(m, d)
            else:
                base = m.base_earnings
                held = d.kind == EARNINGS and base.get(d.party, 0) > 0
                on = await self.service.call(lambda c: c.base_shown(base)) if held else None
                a = answer(epoch, base, d.kind, d.party, base_shown=on)
                await self.service.call(
                    lambda c: c.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
                )
                shown = len(a.entries)
        except (ChainReverted, Invalid) as exc:
            self._refused.add(d)
            why = "sum dispute cannot be answered: the anchor will be voided and our bond slashed"
            log.error(why, extra={**what, "error": str(exc)})  # noqa: TRY400 - no traceback
            return False
        except ChainError as exc:  # an outage: asked again next step
            log.warning("sum dispute answer interrupted: %s", exc, extra=what)
            return False
        self.answered += 1
        log.info("sum dispute answered", extra={**what, "shown": shown})
        return True

    async def _show_parts(self, index: int, tree: ShownLeaves | ShownEntries) -> int:
        """Shows every leaf (or entry) of anchor ``index``, part after part; those shown before
        (a step interrupted, a restart) are not sent again. How many."""
        event = "LeavesShown" if isinstance(tree, ShownLeaves) else "EntriesPartShown"
        done = await self.service.call(lambda c: c.shown_parts(index, tree.nodes, event))
        for part in range(len(tree.nodes)):
            if part in done:
                continue
            if isinstance(tree, ShownLeaves):
                await self.service.call(lambda c: c.answer_leaves(index, tree, part))  # noqa: B023
            else:
                await self.service.call(lambda c: c.answer_entries(index, tree, part))  # noqa: B023
        return len(tree.rows())

    async def _show_previous(self, m: Anchoring, d: SumDispute) -> int:
        """Shows the final entry whose amount the disputed entry names as its ``previous``: its
        line's entry in the last final epoch that holds it, from our history (every epoch we
        built on, whoever posted it).

        Raises:
            Invalid: no entry of ours has the disputed leaf, or our history lacks its line.
        """
        assert m.pending is not None
        mine = [e for e in m.pending.entries if int.from_bytes(e.leaf(), "big") == d.amount]
        if not mine:
            raise Invalid("dispute.amount", "no entry of the pending epoch has this leaf")
        found = await last_entry(self.db, mine[0])
        if found is None:
            raise Invalid("dispute.entry", "its line is in no final epoch of our history")
        await self.service.call(lambda c: c.answer_previous(d, mine[0], found))
        return 1
