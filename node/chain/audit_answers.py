"""The anchoring sentry's side of the audits (``EpochAudits.sol``): answer every sum dispute of
its pending anchor with the entries it posted.

Anyone may dispute a worker's earnings leaf, and a requester its debit; an anchor whose
dispute goes unanswered is voided and its anchorer's bond slashed. So an anchorer answers each
one, however frivolous, while the answer time runs: an honest epoch always has the entries to
show (:func:`consensus.settlement.audits.answer`). One that it cannot answer is our bug (or a
base that is not the chain's), logged once as an error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consensus.settlement.audits import answer
from node.chain.audit_calls import SUM_KINDS, SumDispute
from node.chain.errors import ChainError, ChainReverted

if TYPE_CHECKING:
    from consensus.settlement.anchoring import Anchoring
    from node.chain.service import ChainService

log = logging.getLogger(__name__)


class SumAnswers:
    """Answers the open sum disputes of the machine's pending anchor, once per step."""

    def __init__(self, service: ChainService) -> None:
        self.service = service
        self.answered = 0
        self._refused: set[SumDispute] = set()

    async def step(self, m: Anchoring) -> None:
        if m.state != "pending" or m.pending is None:
            return
        index = m.index
        for d in await self.service.call(lambda c: c.sum_disputes(index)):
            if d not in self._refused:
                await self._answer(m, d)

    async def _answer(self, m: Anchoring, d: SumDispute) -> None:
        assert m.pending is not None
        a = answer(m.pending, m.base_earnings, d.kind, d.party)
        what = {"epoch": d.index, "kind": SUM_KINDS.get(d.kind, str(d.kind)),
                "party": "0x" + d.party.hex(), "amount_wei": str(d.amount)}  # fmt: skip
        try:
            await self.service.call(
                lambda c: c.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
            )
        except ChainReverted as exc:
            self._refused.add(d)
            why = "sum dispute cannot be answered: the anchor will be voided and our bond slashed"
            log.error(why, extra={**what, "error": str(exc)})  # noqa: TRY400 - no traceback
            return
        except ChainError as exc:  # an outage: asked again next step
            log.warning("sum dispute answer interrupted: %s", exc, extra=what)
            return
        self.answered += 1
        log.info("sum dispute answered", extra={**what, "entries": len(a.entries)})
