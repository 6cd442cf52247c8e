"""What an anchoring sentry knows of the epochs other anchorers post, and when it may post.

The rules are in :mod:`consensus.settlement.following`; this keeps the entries heard on gossip
for each anchor (by entries root: a root names one epoch's content), takes the chain's anchors
as :meth:`Settlement.anchors_from` reads them, and adopts into the anchoring machine, in order,
every final or void epoch after its own. It is saved with the machine (``dump``/``load``), so a
sentry restarted while another's epoch is pending still has the entries heard before.
"""

from __future__ import annotations

import logging
from typing import Any

from consensus.settlement.anchoring import Anchoring
from consensus.settlement.epoch import Entry, Line
from consensus.settlement.following import ChainAnchor, may_post, rebuild
from consensus.settlement.messages import EpochEntries

log = logging.getLogger(__name__)
MAX_ROOTS = 16  # epochs whose entries are kept at once: pending ones are one or two


class Follower:
    """``me``: our chain address (20 bytes)."""

    def __init__(self, me: bytes) -> None:
        self.me = me
        self.heard: dict[bytes, dict[Line, Entry]] = {}  # entries root -> its entries heard
        self.stuck: int | None = None  # an epoch we could not rebuild: we anchor no more
        self.on_chain: set[bytes] = set()  # entries roots of the anchors we still follow

    def hear(self, body: EpochEntries) -> int:
        """Keeps the entries of another anchorer's epoch (each proven to ``entries_root`` by
        the message's own check); how many were new. A root the chain does not show (yet: an
        epoch posted since our last look) is the first to go when too many are kept, so made-up
        roots cannot push out a real one."""
        rows = self.heard.pop(body.entries_root, {})
        self.heard[body.entries_root] = rows  # the latest root heard goes last
        while len(self.heard) > MAX_ROOTS:
            spare = [r for r in self.heard if r not in self.on_chain] or list(self.heard)
            del self.heard[spare[0]]
        new = 0
        for entry, _proof, _sig in body.entries():
            new += entry.line not in rows
            rows[entry.line] = entry
        return new

    def may_post(
        self, m: Anchoring, anchors: list[ChainAnchor], now_ms: int, window_ms: int
    ) -> bool:
        """Whether the machine may post this step: every anchor on chain followed (ours is the
        latest, or we adopted it), nothing left we could not rebuild, and our turn."""
        if self.stuck is not None:
            return False
        if anchors and anchors[-1].index > m.index:
            return False
        latest = anchors[-1] if anchors else None
        return may_post(latest, self.me, now_ms, m.epoch_ms, window_ms)

    def catch_up(self, m: Anchoring, anchors: list[ChainAnchor]) -> list[int]:
        """Adopts, in order, every final or void anchor after the machine's latest epoch; stops
        at a pending one (its entries are still coming) or one it cannot rebuild (stuck). The
        indices adopted as final."""
        self.on_chain = {a.entries_root for a in anchors if a.index > m.index}
        adopted: list[int] = []
        if m.state != "idle":
            return adopted
        for a in anchors:
            if a.index <= m.index:
                continue
            if a.state == "pending" or self.stuck is not None:
                break
            if a.state == "void":
                m.adopt(a.index, None)
                continue
            heard = self.heard.get(a.entries_root, {})
            epoch = rebuild(a, heard.values(), m.base_lines, m.base_earnings, m.fee_bps)
            if epoch is None:
                self.stuck = a.index
                log.error(
                    "anchoring stopped: another anchorer's epoch cannot be rebuilt from the "
                    "entries heard here; this sentry will not anchor again",
                    extra={"epoch": a.index, "anchorer": "0x" + a.anchorer.hex(),
                           "entries_heard": len(heard)},
                )  # fmt: skip
                break
            m.adopt(a.index, epoch)
            self.heard.pop(a.entries_root, None)
            adopted.append(a.index)
            log.info("followed another anchorer's epoch", extra={"epoch": a.index,
                     "anchorer": "0x" + a.anchorer.hex(), "entries": len(heard)})  # fmt: skip
        return adopted

    def dump(self) -> list[Any]:
        return [
            [root, [[e.requester, e.worker, e.job, e.task, str(e.amount)] for e in rows.values()]]
            for root, rows in self.heard.items()
        ]

    def load(self, doc: list[Any]) -> None:
        for root, rows in doc:
            entries = (Entry(bytes(r), bytes(w), bytes(j), bytes(t), int(a))
                       for r, w, j, t, a in rows)  # fmt: skip
            self.heard[bytes(root)] = {e.line: e for e in entries}
