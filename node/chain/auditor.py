"""A standing-by anchoring sentry audits another anchorer's pending epoch (``EpochAudits.sol``).

It already keeps that epoch's entries, heard on gossip, to follow it; the anchorer also
gossips the epoch's earnings leaves while it is pending (:mod:`node.chain.anchor_gossip`).
When our base is the anchor's (we followed every epoch before it) and its window is open:

    check                                                    on chain
    a sum dispute (anyone's) its anchorer did not answer     voidSum
    a sum answer shows a requester's entries adding more     voidUnderDebit
    than the anchor debits it (one never debited at all)
    a worker's leaf grew over our base by more than the      disputeEarnings (the anchorer
    entries heard for it add (consensus.settlement.audits)   cannot answer unless it withheld
                                                             entries: its answer shows them)
    an entry's ``previous`` is below the line's amount in    voidConflict, with that entry
    our base (the line counted twice)                        from our epoch history
    an entry's ``previous`` is above it (the line pays less  disputePrevious (the anchorer
    than the voucher its worker holds); these two also for   cannot answer: no final entry
    the entries a sum answer shows, until the grace ends     has that amount)
    (every entry heard) a worker's leaf grew less than its   voidLowLeaf, with its entries
    entries add, net of the fee at its most
    a sum answer shows two entries for one line              voidConflict, with both
    (past half the window, a quarter window listened) its    disputeLeaves: the anchorer
    leaves were not gossiped                                 shows them all, in parts
    (the same) not every one of its entries was gossiped     disputeEntries: the anchorer
                                                             shows them all, in parts
    its leaves leave out a worker with a base leaf, or       showAbsent for each part, then
    (every entry heard) one its entries pay                  voidMissingLeaf

Leaves are judged on every entry heard, or, once half the window has passed without all of
them (withheld: an honest anchorer has gossiped them twice by then), on those heard: an
anchorer that withheld entries must then show them in its answer, where the answer check
sees a requester it never debited. Each is raised once per anchor. Leaves not gossiped by
half the window are demanded on chain; the answer (read from its ``LeavesShown`` events) is
audited like gossiped leaves, with proofs read off its parts, in the window the answer opens
again. Without it an anchorer could credit a colluder that has no entries at all, out of what
the other workers would claim, and nobody could show the leaf. Entries are demanded the same
way: each part shown is checked like a sum answer's entries (a ``previous`` above the line's
amount in our base disputed, one below it voided, a debit below them voided), and once every
part is, they stand for the entries heard. Without it an anchorer and a requester could
withhold an entry whose ``previous`` is raised to its amount: it adds nothing, so no leaf
looks wrong and no sum dispute brings it out, yet the line's final amount jumps, and the worker
is never paid the voucher it holds for the difference.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consensus.errors import Invalid
from consensus.settlement.audits import (
    EARNINGS,
    ENTRIES,
    LEAVES,
    PREVIOUS,
    inflated,
    left_out,
    lowered,
    show,
)
from consensus.settlement.epoch import Entry, Line
from consensus.settlement.leaves import FinalLeaves, LeavesAssembly
from consensus.settlement.merkle import (
    ENTRY_TYPES,
    MerkleTree,
    MultiProof,
)
from consensus.settlement.shown import ShownLeaves
from node.chain.audit_calls import ANSWERED, SumDispute
from node.chain.errors import ChainError
from node.chain.history import last_entry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from consensus.settlement.anchoring import Anchoring
    from consensus.settlement.following import ChainAnchor
    from consensus.settlement.messages import EpochLeaves
    from node.chain.client import Settlement
    from node.chain.service import ChainService
    from storage.db import Database

log = logging.getLogger(__name__)
MAX_ASSEMBLIES = 4  # leaf sets being put together at once (per sender and root)
HISTORY_LOOK = 64  # final epochs searched for a line's last entry


class Auditor:
    def __init__(self, service: ChainService, db: Database, me: bytes) -> None:
        self.service, self.db, self.me = service, db, me
        self.leaves: dict[bytes, FinalLeaves] = {}  # earnings root -> a pending epoch's leaves
        # The entries shown on chain for an entries root, with their tree (None: not shown in
        # OpenZeppelin's layout, so only their parts are checked, as answers)
        self._shown: tuple[bytes, list[Entry], MerkleTree | None] | None = None
        self._assembling: dict[tuple[str, bytes], LeavesAssembly] = {}
        self._raised: set[tuple[int, bytes, int]] = set()  # (epoch, party or leaf, amount)
        self.wanted: bytes | None = None  # the earnings root of the anchor being audited
        self._since: dict[int, int] = {}  # the anchor audited -> when we first looked (ms)
        self.raised = 0
        # Gives the machine back the bases of lines it let go that entries read from the
        # chain name (node.chain.line_bases; set by the anchorer): their `previous` is
        # checked against them.
        self.restore: Callable[[Anchoring, list[Entry]], Awaitable[object]] | None = None

    def hear_leaves(self, part: EpochLeaves, sender: str) -> None:
        """Collects a pending epoch's leaves, per sender and root (a forged part never mixes
        with an honest set); a whole set that hashes to its root is kept. When too many are
        kept, those of the anchor being audited go last: made-up roots cannot push them out."""
        key = (sender, part.earnings_root)
        building = self._assembling.get(key)
        if building is None or not building.matches(part):
            building = self._assembling[key] = LeavesAssembly.first(part)
            while len(self._assembling) > MAX_ASSEMBLIES:
                spare = [k for k in self._assembling if k[1] != self.wanted] or [key]
                del self._assembling[spare[0]]
        try:
            whole = building.add(part)
        except Invalid:
            del self._assembling[key]
            return
        if whole is not None:
            self.leaves[whole.earnings_root] = whole
            while len(self.leaves) > 2:
                kept = [r for r in self.leaves if r != self.wanted]
                del self.leaves[kept[0]]

    async def step(
        self, m: Anchoring, anchors: list[ChainAnchor], heard: dict[bytes, dict[Line, Entry]],
        now_ms: int, window_ms: int,
    ) -> None:  # fmt: skip
        """Audits the latest anchor if it is another's, pending, open, and built on our base."""
        a = anchors[-1] if anchors else None
        if a is not None:
            self._forget_before(a.index)
        if a is None or a.anchorer == self.me or a.state != "pending":
            return
        self.wanted = a.earnings_root
        on_base = a.index == m.index + 1 and m.state == "idle"
        raised = await self.service.call(lambda c: c.sum_disputes(a.index, answered=True))
        if raised:
            await self._void_unanswered(a.index, raised, now_ms // 1000)
            await self._check_answers(a.index, m if on_base else None)
        if not on_base or now_ms >= a.deadline_ms:
            return
        # Leaves are demanded only once we have listened for them a while (a quarter window):
        # after a restart, gossip heard before it is gone, and a demand costs the anchorer.
        self._since = {a.index: self._since.get(a.index, now_ms)}
        half = now_ms >= a.posted_ms + window_ms // 2
        demand = half and now_ms >= self._since[a.index] + window_ms // 4
        await self._audit(a, m, list(heard.get(a.entries_root, {}).values()), half, demand)

    async def _audit(
        self, a: ChainAnchor, m: Anchoring, entries: list[Entry], half: bool, demand: bool
    ) -> None:
        """Audits anchor ``a`` (open, on our base) against ``entries`` heard for it; ``half``:
        half its window has passed, so entries and leaves not heard by now are withheld;
        ``demand``: and we listened long enough to demand the leaves."""
        tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in entries]) if entries else None
        if tree is not None and tree.root != a.entries_root:
            tree = None  # not every entry of it heard: no proofs from what was
        if tree is None and half:
            entries, tree = await self._entries(a, demand, entries)
        if tree is not None and await self._entries_wrong(a, m, entries, tree):
            return  # voided: nothing left to dispute
        if not half and tree is None:
            return  # gossip still coming
        leaves = await self._leaves(a, demand)
        if leaves is None or await self._left_out(a, m, leaves, entries if tree else [], tree):
            return
        for worker in inflated(leaves.amounts, m.base_earnings, entries, m.fee_bps):
            await self._dispute(a.index, worker, leaves)

    async def _entries_wrong(
        self, a: ChainAnchor, m: Anchoring, entries: list[Entry], tree: MerkleTree
    ) -> bool:
        """The checks of every entry heard (``tree`` proves them); whether one voided."""
        if self.restore is not None:
            await self.restore(m, entries)
        for e in entries:
            if e.previous != m.base_lines.get(e.line, 0):
                await self._wrong_previous(a.index, m, e, tree.proof(e.leaf()))
        proof = tree.multi_proof([e.leaf() for e in entries])
        by_leaf = {e.leaf(): e for e in entries}
        if await self._under_debits(a.index, [by_leaf[x] for x in proof.leaves], proof):
            return True
        if await self._twice(a.index, entries, proof):  # shown on demand: gossip keeps one
            return True
        return await self._low_leaves(a, m, entries, tree)

    async def _entries(
        self, a: ChainAnchor, demand: bool, heard: list[Entry]
    ) -> tuple[list[Entry], MerkleTree | None]:
        """Anchor ``a``'s entries, not all heard on gossip: shown on chain in answer to an
        entries dispute (with the tree, when shown in OpenZeppelin's layout; otherwise each
        part is checked as an answer is, :meth:`_check_answers`). Not shown, and ``demand``:
        the dispute is raised, once. Otherwise those ``heard``, and no tree."""
        if self._shown is None or self._shown[0] != a.entries_root:
            shown = await self.service.call(lambda c: c.entries_shown(a.index))
            if shown is not None:
                try:
                    tree = shown.tree()
                except Invalid:  # the contract checked them: not ours to doubt, not usable
                    tree = None
                self._shown = (a.entries_root, shown.rows(), tree)
        if self._shown is not None and self._shown[0] == a.entries_root:
            _, rows, tree = self._shown
            return (rows, tree) if tree is not None else (heard, None)
        if demand and self._once(key := (a.index, b"entries", 0)):
            raised = await self.service.call(lambda c: c.sum_disputes(a.index, answered=True))
            if not any(d.kind == ENTRIES for d in raised):  # else another watcher's: ours too
                log.warning("another anchorer's epoch entries were not all gossiped: "
                            "demanding them", extra={"epoch": a.index})  # fmt: skip
                await self._send(lambda c: c.dispute_entries(a.index), key)
        return heard, None

    async def _leaves(self, a: ChainAnchor, demand: bool) -> FinalLeaves | None:
        """Anchor ``a``'s leaves: gossiped, or shown on chain in answer to a leaves dispute.
        Neither, and ``demand``: the dispute is raised, once. (Another watcher's demand may be
        answered before our half window, so an answer is read whenever there is one.)"""
        leaves = self.leaves.get(a.earnings_root)
        if leaves is not None:
            return leaves
        parts = await self.service.call(lambda c: c.leaves_shown(a.index))
        if parts is not None:
            try:
                leaves = FinalLeaves.of_shown(a.index, a.earnings_root, parts)
            except Invalid:  # the contract checked them: not ours to doubt, but not usable
                return None
            self.leaves[a.earnings_root] = leaves
            return leaves
        if demand and self._once(key := (a.index, b"leaves", 0)):
            raised = await self.service.call(lambda c: c.sum_disputes(a.index, answered=True))
            if any(d.kind == LEAVES for d in raised):
                return None  # another watcher demanded them: its answer comes to us too
            log.warning("another anchorer's epoch leaves were not gossiped: demanding them",
                        extra={"epoch": a.index})  # fmt: skip
            await self._send(lambda c: c.dispute_leaves(a.index), key)
        return None

    async def _left_out(
        self, a: ChainAnchor, m: Anchoring, leaves: FinalLeaves, entries: list[Entry],
        tree: MerkleTree | None,
    ) -> bool:  # fmt: skip
        """Voids anchor ``a`` if ``leaves`` leave out a worker that held a base leaf or that
        ``entries`` (all of the anchor's, ``tree`` proving them; or none) pay: its pay would be
        lost. Each part of the leaves is shown without it first (a transaction each, so any
        tree can be shown). Whether it was voided."""
        entries = [e for e in entries if e.amount >= e.previous]  # as in _low_leaves
        out = left_out(leaves.amounts, m.base_earnings, entries, m.fee_bps)
        if not out or (key := (a.index, b"out" + out[0], 0)) in self._raised:
            return False
        worker, parts = out[0], leaves.shown or ShownLeaves.of_rows(leaves.amounts.items())
        on = await self._base_shown(m, worker)  # these first: they may fail, nothing sent
        s = show(entries, tree if entries else None, m.base_earnings, EARNINGS, worker,
                 base_shown=on)  # fmt: skip
        owed = ((s.base, s.base_proof), s.entries, s.proof)
        done = await self.service.call(lambda c: c.absent_parts(a.index, worker, parts.nodes))
        self._raised.add(key)
        log.warning("another anchorer's epoch leaves out a worker it owes: voiding",
                    extra={"epoch": a.index, "worker": "0x" + worker.hex()})  # fmt: skip
        for j in set(range(len(parts.nodes))) - done:
            if not await self._send(lambda c: c.show_absent(a.index, worker, parts, j), key):  # noqa: B023
                return False
        return await self._send(
            lambda c: c.void_missing_leaf(a.index, worker, owed, parts.nodes), key
        )

    async def _void_unanswered(self, index: int, raised: list[SumDispute], now_s: int) -> None:
        """Voids anchor ``index`` for a sum dispute (anyone's) its anchorer let run out: its
        raiser gets the reward, whoever sends the void."""
        for d in raised:
            if d.answer_by != ANSWERED and now_s >= d.answer_by:
                log.warning("voiding an anchor: its anchorer did not answer a sum dispute",
                            extra={"epoch": index, "party": "0x" + d.party.hex()})  # fmt: skip
                if await self._send(lambda c: c.void_sum(d)):  # noqa: B023 - awaited at once
                    return

    async def _check_answers(self, index: int, m: Anchoring | None) -> None:
        """Voids anchor ``index`` when an answer to one of its sum disputes shows entries of a
        requester that add more than the anchor debits it (one never debited at all: a made-up
        requester, paying a worker out of the others' money), or two entries for one line; and
        with ``m`` (our base is the anchor's) checks each entry's ``previous``, as for those
        heard: entries withheld from gossip are first seen here."""
        for _kind, _party, entries, proof in await self.service.call(
            lambda c: c.sum_answers(index)
        ):
            if await self._under_debits(index, entries, proof) or await self._twice(
                index, entries, proof
            ):
                return
            if m is None:
                continue
            if self.restore is not None:
                await self.restore(m, entries)
            wrong = [e for e in entries if e.previous != m.base_lines.get(e.line, 0)]
            if not wrong:
                continue
            try:
                proofs = proof.single_proofs()
            except Invalid:  # the contract took the answer, so its multiproof is sound
                return
            for e in wrong:
                await self._wrong_previous(index, m, e, proofs[e.leaf()])

    async def _twice(self, index: int, entries: list[Entry], proof: MultiProof) -> bool:
        """Voids anchor ``index`` if ``entries`` (an answer's, in ``proof``) hold two for one
        line: each adds its amount, so the voucher is paid twice. Gossip cannot show them (the
        follower keeps one entry per line), but the leaf they inflate is disputed, and the
        anchorer's answer must show both."""
        seen: dict[Line, Entry] = {}
        for e in entries:
            first = seen.setdefault(e.line, e)
            if first.leaf() == e.leaf() or not self._once(key := (index, e.leaf(), -1)):
                continue
            try:
                proofs = proof.single_proofs()
            except Invalid:  # the contract took the answer, so its multiproof is sound
                return False
            log.warning("another anchorer's epoch has two entries for one line: voiding",
                        extra={"epoch": index, "job": "0x" + e.job.hex()})  # fmt: skip
            pair = (first, proofs[first.leaf()]), (index, e, proofs[e.leaf()])
            if await self._send(lambda c: c.void_conflict(index, *pair), key):  # noqa: B023
                return True
        return False

    async def _under_debits(self, index: int, entries: list[Entry], proof: MultiProof) -> bool:
        """Voids anchor ``index`` if ``entries`` (in ``proof``'s order) add more for one of
        their requesters than the anchor debits it; whether it was voided."""
        debits: dict[bytes, int] = {}
        for who, amount in await self.service.call(lambda c: c.anchor_debits(index)):
            r = bytes.fromhex(who[2:])
            debits[r] = debits.get(r, 0) + amount
        for requester in sorted({e.requester for e in entries}):
            added = sum(e.added for e in entries if e.requester == requester)
            debited = debits.get(requester, 0)
            if added <= debited or not self._once(key := (index, requester, added)):
                continue
            log.warning("another anchorer's epoch has entries its debits do not cover: voiding",
                        extra={"epoch": index, "requester": "0x" + requester.hex(),
                               "entries_wei": str(added), "debited_wei": str(debited)})  # fmt: skip
            shown = (index, requester, entries, proof)
            if await self._send(lambda c: c.void_under_debit(*shown), key):  # noqa: B023
                return True
        return False

    async def _low_leaves(
        self, a: ChainAnchor, m: Anchoring, entries: list[Entry], tree: MerkleTree
    ) -> bool:
        """Voids anchor ``a`` if its gossiped leaves pay a worker less than its entries (all
        heard: ``tree`` proves them) add, net of the fee at its most; whether it was voided."""
        leaves = self.leaves.get(a.earnings_root)
        if leaves is None:
            return False
        # An entry below its own ``previous`` would make the contract's sum revert; leaving it
        # out only lowers the bound.
        entries = [e for e in entries if e.amount >= e.previous]
        for worker in lowered(leaves.amounts, m.base_earnings, entries, m.fee_bps):
            amount = leaves.amounts[worker]
            if (a.index, b"low" + worker, amount) in self._raised:
                continue
            proof = leaves.proof_of(worker)  # these first: they may fail, the void not sent
            on = await self._base_shown(m, worker)
            shown = show(entries, tree, m.base_earnings, EARNINGS, worker, base_shown=on)
            self._raised.add(key := (a.index, b"low" + worker, amount))
            log.warning("another anchorer's epoch pays a worker less than its entries add: "
                        "voiding", extra={"epoch": a.index, "worker": "0x" + worker.hex(),
                                          "leaf_wei": str(amount)})  # fmt: skip
            args = (a.index, (worker, amount, proof), (shown.base, shown.base_proof),
                    shown.entries, shown.proof)  # fmt: skip
            if await self._send(lambda c: c.void_low_leaf(*args), key):  # noqa: B023
                return True
        return False

    async def _dispute(self, index: int, worker: bytes, leaves: FinalLeaves) -> None:
        amount = leaves.amounts[worker]
        if (index, worker, amount) in self._raised:
            return
        proof = leaves.proof_of(worker)  # before it counts as raised: it cannot fail after
        self._raised.add(key := (index, worker, amount))
        log.warning("another anchorer's epoch credits a worker more than its entries add: "
                    "disputing", extra={"epoch": index, "worker": "0x" + worker.hex(),
                                        "leaf_wei": str(amount)})  # fmt: skip
        await self._send(lambda c: c.dispute_earnings(index, worker, amount, proof), key)

    async def _wrong_previous(self, index: int, m: Anchoring, e: Entry, proof: list[bytes]) -> None:
        """``e`` (with its ``proof`` in anchor ``index``) names a ``previous`` other than its
        line's amount in our base: below it, the line is counted twice; above it, underpaid."""
        if e.previous < m.base_lines.get(e.line, 0):
            await self._conflict(index, e, proof)
        else:
            await self._dispute_previous(index, e, proof)

    async def _dispute_previous(self, index: int, e: Entry, proof: list[bytes]) -> None:
        """Disputes ``e``'s ``previous``, above its line's amount in our base: the line would
        pay the worker less than the voucher it holds, and debit its requester less (the two
        with the anchorer could underpay the worker so). No final entry of the line has that
        amount, so the anchorer cannot answer, and the anchor is voided when its time runs
        out (:meth:`_void_unanswered`)."""
        if not self._once(key := (index, e.leaf(), -2)):
            return
        leaf = int.from_bytes(e.leaf(), "big")
        raised = await self.service.call(lambda c: c.sum_disputes(index, answered=True))
        if any(d.kind == PREVIOUS and d.amount == leaf for d in raised):
            return  # another watcher's (or ours, before a restart)
        log.warning("another anchorer's epoch pays a line from a previous amount it never "
                    "anchored: disputing", extra={"epoch": index, "job": "0x" + e.job.hex(),
                                                  "previous_wei": str(e.previous)})  # fmt: skip
        await self._send(lambda c: c.dispute_previous(index, e, proof), key)

    async def _conflict(self, index: int, e: Entry, proof: list[bytes]) -> None:
        """Voids anchor ``index`` for ``e`` (with its ``proof`` there)."""
        if (index, e.leaf(), e.previous) in self._raised:
            return
        found = await last_entry(self.db, e, HISTORY_LOOK)
        if found is None or not self._once(key := (index, e.leaf(), e.previous)):
            return
        at, prior, prior_proof = found
        log.warning("another anchorer's epoch counts a line twice: voiding", extra={
            "epoch": index, "job": "0x" + e.job.hex(), "previous_wei": str(e.previous),
            "anchored_wei": str(prior.amount), "in_epoch": at})  # fmt: skip
        entry = (e, proof)
        await self._send(lambda c: c.void_conflict(index, entry, (at, prior, prior_proof)), key)

    async def _base_shown(self, m: Anchoring, worker: bytes) -> ShownLeaves | None:
        """The last final root's leaves as shown, when ``worker``'s base leaf must be proved
        off them (a tree followed from shown leaves, not the sorted one)."""
        if m.base_earnings.get(worker, 0) == 0:
            return None
        return await self.service.call(lambda c: c.base_shown(m.base_earnings))

    def _forget_before(self, index: int) -> None:
        """Forgets what we raised against anchors before ``index``, the chain's latest.

        Only the latest anchor is audited, and it was posted only once every anchor before it
        was final or voided (a post finalizes the one before: ``anchors_after``): nothing can
        be raised against those any more, so their keys are never read again. Those of the
        latest stay until the next is posted, past its whole window and any answer's.
        """
        if any(key[0] < index for key in self._raised):
            self._raised = {key for key in self._raised if key[0] >= index}

    def _once(self, key: tuple[int, bytes, int]) -> bool:
        if key in self._raised:
            return False
        self._raised.add(key)
        return True

    async def _send(
        self, call: Callable[[Settlement], object], key: tuple[int, bytes, int] | None = None
    ) -> bool:
        """Sends ``call``; on failure forgets ``key`` (raised once), so a later step tries again."""
        try:
            await self.service.call(call)
        except ChainError as exc:
            log.warning("audit not sent: %s", exc)
            if key is not None:
                self._raised.discard(key)
            return False
        self.raised += 1
        return True
