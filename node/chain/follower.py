"""What an anchoring sentry knows of the epochs other anchorers post, and when it may post.

The rules are in :mod:`consensus.settlement.following`; this keeps the entries heard on gossip
for each anchor (by entries root: a root names one epoch's content), takes the chain's anchors
as :meth:`Settlement.anchors_after` reads them, and adopts into the anchoring machine, in order,
every final or void epoch after its own. It is saved with the machine (``dump``/``load``), so a
sentry restarted while another's epoch is pending still has the entries heard before.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from consensus.settlement.anchoring import Anchoring
from consensus.settlement.anchoring_state import entry_of_row, entry_row
from consensus.settlement.epoch import Entry, Epoch, Line
from consensus.settlement.following import ChainAnchor, may_post, rebuild
from consensus.settlement.messages import EpochEntries
from consensus.settlement.shown import ShownLeaves

log = logging.getLogger(__name__)
MAX_ROOTS = 4  # epochs whose entries are kept at once: pending ones are one or two
MAX_LINES = 100_000  # entries kept per epoch (a thousand jobs per epoch is the design point)
MAX_SOURCES = 8  # anchorers kept to ask for history
CADENCE_ANCHORS = 5  # the latest anchors whose post times tell how often they come


class Follower:
    """``me``: our chain address (20 bytes)."""

    def __init__(self, me: bytes) -> None:
        self.me = me
        self.heard: dict[bytes, dict[Line, Entry]] = {}  # entries root -> its entries heard
        self.stuck: int | None = None  # a final epoch we cannot rebuild (yet): no posting
        self.sources: dict[str, int] = {}  # anchorers heard (peer -> when, ms): asked for history
        self.proven: set[str] = set()  # sources whose entries were an epoch on chain
        self.sender_of: dict[bytes, str] = {}  # entries root -> who gossiped it first
        self.on_chain: set[bytes] = set()  # entries roots of the anchors we still follow
        self.followed = -1  # the machine's latest epoch, as of our last look
        self.index_of: dict[bytes, int] = {}  # entries root -> the epoch its messages named
        self.posted: dict[int, int] = {}  # anchor index -> its post's block time (ms), recent
        # anchor index -> its leaves as shown on chain, read for an epoch we were stuck on
        # (None: none were; none can be once it is final): a tree that is not the sorted one
        # is followed from them (see ``rebuild``)
        self.shown: dict[int, ShownLeaves | None] = {}

    def heard_from(self, peer: str, now_ms: int) -> None:
        """``peer`` gossiped as an anchorer (entries or leaves): one to ask for history. When
        too many are known, one not proven (see :meth:`catch_up`) goes first, so peers that
        merely say they anchor cannot push out one whose epochs were on chain."""
        self.sources[peer] = now_ms
        while len(self.sources) > MAX_SOURCES:
            unproven = [p for p in self.sources if p not in self.proven] or list(self.sources)
            del self.sources[min(unproven, key=self.sources.__getitem__)]

    def by_recency(self) -> list[str]:
        """Sources to ask for history: proven ones first, then the latest heard."""
        return sorted(self.sources, key=lambda p: (p in self.proven, self.sources[p]), reverse=True)

    def hear_epoch(self, index: int, root: bytes, entries: list[Entry]) -> None:
        """The entries of the chain's epoch ``index``, served as history and checked by the
        caller to give its entries root exactly (:mod:`node.chain.history`): they replace
        what gossip brought of it."""
        if index > self.followed:
            self.heard[root] = {e.line: e for e in entries}
            self.index_of[root] = index
            self.on_chain.add(root)

    def hear(self, body: EpochEntries, peer: str = "") -> int:
        """Keeps the entries of another anchorer's epoch (each proven to ``entries_root`` by
        the message's own check); how many were new. Ours (gossip hands our own messages back)
        and epochs we followed already are dropped. A root the chain does not show (yet: an
        epoch posted since our last look) is the first to go when too many are kept, and is
        not saved, so made-up roots cannot push out a real one nor fill the saved state."""
        if body.index <= self.followed:
            return 0
        rows = self.heard.pop(body.entries_root, {})
        self.heard[body.entries_root] = rows  # the latest root heard goes last
        self.sender_of.setdefault(body.entries_root, peer)
        self.index_of.setdefault(body.entries_root, body.index)
        while len(self.heard) > MAX_ROOTS:
            spare = [r for r in self.heard if r not in self.on_chain] or list(self.heard)
            self._drop(spare[0])
        new = 0
        for entry, _proof, _sig in body.entries():
            if entry.line not in rows and len(rows) >= MAX_LINES:
                break
            new += entry.line not in rows
            rows[entry.line] = entry
        return new

    def may_post(
        self, m: Anchoring, anchors: list[ChainAnchor], now_ms: int, window_ms: int
    ) -> bool:
        """Whether the machine may post this step: every anchor on chain followed (ours is the
        latest, or we adopted it), nothing left we could not rebuild, and our turn."""
        for a in anchors:
            self._saw(a)
        if self.stuck is not None:
            return False
        if anchors and anchors[-1].index > m.index:
            return False
        latest = anchors[-1] if anchors else None
        # Anchors come at most once a window (one pending at a time), so a gap G between them
        # says the active anchorer's epoch is at least G - window: with it, our takeover falls
        # after its next post while it is alive (see cadence_ms).
        theirs = self.cadence_ms() - window_ms
        return may_post(latest, self.me, now_ms, max(m.epoch_ms, theirs), window_ms)

    def _saw(self, anchor: ChainAnchor) -> None:
        self.posted[anchor.index] = anchor.posted_ms
        while len(self.posted) > CADENCE_ANCHORS:
            del self.posted[min(self.posted)]

    def cadence_ms(self) -> int:
        """How often the anchors on chain were posted: the shortest gap between consecutive
        ones seen (an anchorer posts every epoch it has something new; longer gaps had
        nothing), 0 before two were seen. An anchorer posts at the later of its epoch timer
        and the end of its last anchor's window, so the gap is max(its epoch, the window): a
        standing-by sentry configured with a shorter epoch than the active one's would
        otherwise take over from a live anchorer and race it."""
        pairs = itertools.pairwise(sorted(self.posted.items()))
        return min((b[1] - a[1] for a, b in pairs if b[0] == a[0] + 1 and b[1] > a[1]), default=0)

    def catch_up(self, m: Anchoring, anchors: list[ChainAnchor]) -> list[tuple[int, Epoch]]:
        """Adopts, in order, every final or void anchor after the machine's latest epoch; stops
        at a pending one (its entries are still coming) or one it cannot rebuild (``stuck``
        until its entries come: from another anchorer's history, see
        :mod:`node.chain.history`; one of ours the machine does not know is that too, its state
        was lost). The epochs adopted (not the void ones)."""
        self.stuck = None
        adopted: list[tuple[int, Epoch]] = []
        for a in anchors:
            if a.index <= m.index or m.state != "idle":
                continue
            if a.index != m.index + 1 or a.state == "pending":
                break  # one missing from the chain's answer: asked again next step
            if a.state == "void":
                m.adopt(a.index, None, finalized=True)
                continue
            heard = self.heard.get(a.entries_root, {})
            epoch = rebuild(a, heard.values(), m.base_lines, m.base_earnings, m.fee_bps,
                            shown=self.shown.get(a.index))  # fmt: skip
            if epoch is None:
                self.stuck = a.index
                break
            m.adopt(a.index, epoch, finalized=a.finalized)
            if sender := self.sender_of.get(a.entries_root):
                self.proven.add(sender)
            adopted.append((a.index, epoch))
            log.info("followed another anchorer's epoch", extra={"epoch": a.index,
                     "anchorer": "0x" + a.anchorer.hex(), "entries": len(heard)})  # fmt: skip
        self.followed = m.index
        self.shown = {i: s for i, s in self.shown.items() if i > m.index}
        self.on_chain = {a.entries_root for a in anchors if a.index > m.index}
        for root in [r for r in self.heard if self.index_of.get(r, -1) <= m.index]:
            self._drop(root)  # followed already, voided, or ours
        return adopted

    def _drop(self, root: bytes) -> None:
        self.heard.pop(root, None)
        self.index_of.pop(root, None)
        self.sender_of.pop(root, None)

    def dump(self) -> list[Any]:
        """The entries of the anchors the chain showed at our last look (not made-up roots)."""
        return [
            [root, self.index_of[root], [entry_row(e) for e in rows.values()]]
            for root, rows in self.heard.items() if root in self.on_chain
        ]  # fmt: skip

    def load(self, doc: list[Any]) -> None:
        for root, index, rows in doc:
            self.index_of[bytes(root)] = int(index)
            self.on_chain.add(bytes(root))
            entries = (entry_of_row(row) for row in rows)
            self.heard[bytes(root)] = {e.line: e for e in entries}
