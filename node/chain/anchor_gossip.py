"""What an anchoring sentry says on the ``anchors`` topic about its epochs.

A pending epoch's entries go out for its requesters to check (and other anchorers to follow),
with its earnings leaves (for other anchorers to audit; workers take leaves only once their
root is the contract's claim root): once posted, then about ENTRIES_TIMES times in its window.
The last final epoch's earnings leaves go out for workers to build their Merkle proofs: when it
changes, and again every epoch (at most every LEAVES_EVERY_S) for workers that missed them
(gossip is lossy) or joined since. Each round is every entry or leaf, so neither goes out on
every poll.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from config.schema import ChainSettings
from consensus.envelope import new_nonce
from consensus.settlement.anchoring import Anchoring
from consensus.settlement.leaves import FinalLeaves, leaves_parts
from consensus.settlement.messages import MAX_LEAVES, EpochEntries, EpochLeaves, entries_parts
from node.chain.payee import ANCHORS, TTL_MS

if TYPE_CHECKING:
    from node.market.net import MarketNet

LEAVES_EVERY_S = 60.0
ENTRIES_TIMES = 4  # a pending epoch's entries go out about this many times in its window


class AnchorGossip:
    def __init__(self, net: MarketNet, settings: ChainSettings) -> None:
        self.net, self.settings = net, settings
        self._leaves_sent, self._leaves_due = -1, 0.0  # the epoch whose leaves went out last
        self._entries_sent, self._entries_due = -1, 0.0  # likewise for a pending epoch's entries

    async def leaves(self, final: tuple[int, dict[bytes, int]] | None, per_message: int) -> None:
        """The last final epoch's leaves (``final``: its index and earnings), when due."""
        if final is None or not final[1]:
            return
        now = trio.current_time()
        if final[0] == self._leaves_sent and now < self._leaves_due:
            return
        every = min(LEAVES_EVERY_S, max(self.settings.poll_s, self.settings.epoch_s))
        self._leaves_sent, self._leaves_due = final[0], now + every  # short epochs: sooner
        await self._leaves(*final, per_message)

    async def _leaves(self, index: int, earnings: dict[bytes, int], per_message: int) -> None:
        root = FinalLeaves(index, b"", earnings).tree().root
        expires = self.net.now_ms() + TTL_MS
        for part, parts, workers, amounts in leaves_parts(earnings, per_message):
            await self.net.publish(ANCHORS, EpochLeaves(
                expires_ms=expires, nonce=new_nonce(), index=index, earnings_root=root,
                part=part, parts=parts, workers=workers, amounts=amounts,
            ))  # fmt: skip

    async def entries(self, m: Anchoring, per_message: int = MAX_LEAVES) -> None:
        """The machine's pending epoch's entries, with their proofs and vouchers, and its
        earnings leaves (for other anchorers to audit: :mod:`node.chain.auditor`), when due."""
        if m.state != "pending" or m.pending is None:
            return
        now = trio.current_time()
        if m.index == self._entries_sent and now < self._entries_due:
            return
        window_s = max(0, m.window_end_ms - (m.last_post_ms or m.window_end_ms)) / 1000
        self._entries_sent = m.index
        self._entries_due = now + max(self.settings.poll_s, window_s / ENTRIES_TIMES)
        root, expires = m.pending.entries_tree.root, self.net.now_ms() + TTL_MS
        for requester, part, parts, rows in entries_parts(m.pending, m.signatures):
            await self.net.publish(ANCHORS, EpochEntries(
                expires_ms=expires, nonce=new_nonce(), index=m.index, entries_root=root,
                requester=requester, part=part, parts=parts, rows=rows,
            ))  # fmt: skip
        await self._leaves(m.index, m.pending.earnings, per_message)
