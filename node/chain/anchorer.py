"""The anchoring service on sentries (``sentry/anchoring``): vouchers in, one anchor per epoch.

How the anchorer learns entries: workers gossip a :class:`SettledVoucher` on ``anchors`` for
every task that ended (see :mod:`node.chain.payee`). Each is checked here: the requester's
EIP-712 signatures (the voucher's and its spend's) must recover to the requester it names, and
``ChainNode.excluded(ref)`` (fed by proof-of-compute) must not reject the task; the machine then
keeps the largest amount per (job, task, worker) and the largest spend per requester. An epoch
takes a requester's lines only while that spend covers the pool's ``debited`` on chain plus the
new debit (the contract refuses more); a requester short of it waits (logged once). Every
``chain.epoch_s`` the machine posts an anchor of what grew; it answers disputes with the signed
vouchers, and finalizes after the window. While an epoch is pending its entries are gossiped on
``anchors`` (:class:`EpochEntries`: per requester, with their proofs and the vouchers held) so
each requester can dispute what it never signed (:mod:`node.chain.disputer`); each final epoch's
earnings leaves are gossiped back so workers can build their Merkle proofs.

More than one sentry may anchor (:mod:`consensus.settlement.following`): each keeps the
entries other anchorers gossip for their pending epochs (:class:`node.chain.follower.Follower`)
and, every step, reads the anchors after its own latest epoch from the chain. It posts only
when it has followed them all and it is its turn (the latest anchor is its own, or its
anchorer went silent); an epoch it cannot rebuild halts it until another anchorer's history
(:mod:`node.chain.history`) fills the gap.

Exactly once: the machine is saved in ``settle_anchoring`` after every step and BEFORE a post
is sent, in state ``posting``. The post itself is a journaled transaction. A restart (even
after kill -9) that finds ``posting`` lets the journal finish the transaction, then asks the
chain whether the latest anchor is this epoch: if so it is pending, else it is posted again.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.errors import Invalid
from consensus.market.messages import TaskRef
from consensus.settlement import anchoring_state
from consensus.settlement.anchoring import Anchoring, Answer, Effect, Finalize, Post
from consensus.settlement.epoch import Line
from consensus.settlement.following import ChainAnchor
from consensus.settlement.leaves import FinalLeaves
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import (
    MAX_LEAVES,
    EpochEntries,
    EpochLeaves,
    SettledVoucher,
    VoucherCap,
)
from node.chain.anchor_gossip import AnchorGossip
from node.chain.anchoring import _events as anchor_events
from node.chain.audit_answers import SumAnswers
from node.chain.auditor import Auditor
from node.chain.cap_echo import CapEcho
from node.chain.errors import ChainError, ChainReverted, survive
from node.chain.follower import Follower
from node.chain.history import EpochHistory
from node.chain.line_bases import LineBases
from node.chain.payee import ANCHOR_KINDS, ANCHORS
from node.chain.payout import Payer
from node.chain.signing import check_cap, spend_signer, voucher_signer
from storage.db import Database

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.node import ChainNode
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
HOLD_EPOCHS = 4  # how long a voucher the exclusion hook refuses is asked about again


class Anchorer:
    leaves_per_message = MAX_LEAVES  # tests split small epochs into several messages

    def __init__(self, chain: ChainNode, db: Database, net: MarketNet) -> None:
        self.chain, self.db, self.net = chain, db, net
        self.service = chain.service
        self.machine: Anchoring | None = None
        self.final: tuple[int, dict[bytes, int]] | None = None  # last final epoch's leaves
        self.refs: dict[Line, TaskRef] = {}
        self.held: dict[Line, tuple[SettledVoucher, int]] = {}  # excluded for now, and since
        self.seen_disputes: dict[int, set[bytes]] = {}  # the pending epoch's disputed leaves
        self.posted = 0  # anchors this process posted (tests count them)
        self.gossip = AnchorGossip(net, chain.settings)
        self.cap_echo = CapEcho(net, db, chain.settings.epoch_s * 1000)
        self.payer = Payer(self.service, chain.settings.payout_min_wei)
        self.follower = Follower(bytes.fromhex(chain.address[2:]))
        self.history = EpochHistory(db, net)
        self.sums = SumAnswers(self.service, db)
        self.auditor = Auditor(self.service, db, self.follower.me)
        self.bases = LineBases(db)  # the lines the machine let go (see Anchoring.settle)
        self._settle_due = True  # at start too: a state saved before this settled
        self.auditor.restore = self.bases.restore
        self.window_ms = 0  # the contract's dispute window (read at start)
        self.active = True  # our turn to anchor (consensus.settlement.following.may_post)
        self._short_told: set[bytes] = set()  # requesters whose short spend was logged

    async def resume(self) -> None:
        """Loads the saved machine; a post that a crash interrupted is settled with the chain."""
        fee_bps = int(await self.service.call(lambda c: c.params()["fee_bps"]))
        self.window_ms = 1000 * await self.service.call(lambda c: c.dispute_window_s())
        self.machine = await self._load(fee_bps)
        await self.cap_echo.load()
        if self.machine.state == "posting":
            await self._resolve_post()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.resume()
        self.history.register()
        inbox = await self.net.subscribe(ANCHORS, ANCHOR_KINDS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow, inbox)
            task_status.started()
            while True:
                await survive(self.step, "anchoring", log)
                await trio.sleep(self.chain.settings.poll_s)

    async def _follow(self, inbox: Any) -> None:
        async for message in inbox:
            body = message.opened.body
            try:
                if isinstance(body, SettledVoucher):
                    await self.on_voucher(body)
                elif isinstance(body, VoucherCap):
                    await self.on_cap(body)
                elif isinstance(body, EpochEntries | EpochLeaves):  # another anchorer's
                    if message.origin != getattr(self.net, "peer_id", None):  # not our echo
                        self.follower.heard_from(message.origin, self.net.now_ms())
                    if isinstance(body, EpochEntries):
                        self.follower.hear(body, message.origin)
                    else:
                        self.auditor.hear_leaves(body, message.origin)
            except Exception as exc:  # e.g. the exclusion hook failed: the sender resends
                log.warning("anchoring: %s not taken: %r", type(body).__name__, exc)

    async def on_voucher(self, v: SettledVoucher) -> bool:
        """Takes a worker's voucher if it is genuine, not excluded and larger than known, and
        its requester's spend if genuine and larger than held (even with an old voucher)."""
        async with self.bases.lock:  # its line is not let go between its restore and update
            return await self._take_voucher(v)

    async def _take_voucher(self, v: SettledVoucher) -> bool:
        assert self.machine is not None
        entry = v.entry()
        await self.bases.restore(self.machine, [entry])  # a line let go: its base is back
        known, spend = self.machine.latest.get(entry.line), self.machine.spends.get(v.requester)
        newer = known is None or known[0].amount < entry.amount
        richer = spend is None or spend.cumulative < v.spend_wei
        if not (newer or richer) or not self._genuine(v):  # a repeat costs no signature check
            return False
        if richer:
            self.machine.on_spend(v.spend())
            await self._save()
        if not newer:
            return False
        if await self.chain.excluded(v.ref):  # failed, or not verified yet: asked again later
            held = self.held.get(entry.line)
            if held is None or held[0].amount_wei < v.amount_wei:
                self.held[entry.line] = (v, self.net.now_ms())
            return False
        try:
            self.machine.on_voucher(entry, v.signature)
        except Invalid as exc:
            capped = entry.line in self.machine.caps  # the only refusal a worker resends into
            if not capped or await self.cap_echo.refused(entry.line):
                log.info("anchoring: voucher refused",
                         extra={"task": v.ref.text(), "error": str(exc)})  # fmt: skip
            return False
        self.refs[entry.line] = v.ref
        await self._save()
        return True

    def _genuine(self, v: SettledVoucher) -> bool:
        """Both of the requester's signatures check (the spend covers the voucher: see the
        message); a malformed signature is the sender's fault, not ours."""
        voucher = chain_voucher_for(v.ref, v.worker, v.amount_wei)
        domain, requester = self.chain.domain, "0x" + v.requester.hex()
        try:
            signers = {voucher_signer(domain, voucher, v.signature).lower(),
                       spend_signer(domain, v.spend()).lower()}  # fmt: skip
        except Exception as exc:
            log.info("anchoring: voucher refused", extra={"task": v.ref.text(), "error": str(exc)})
            return False
        if signers != {requester}:
            log.info("anchoring: voucher or spend not signed by its requester",
                     extra={"task": v.ref.text()})  # fmt: skip
            return False
        return True

    async def on_cap(self, c: VoucherCap) -> bool:
        """Takes a requester's cap on a lost attempt if both its signatures are the
        requester's; the line is anchored at the cap, however much its worker was vouched."""
        async with self.bases.lock:
            return await self._take_cap(c)

    async def _take_cap(self, c: VoucherCap) -> bool:
        assert self.machine is not None
        entry = c.entry()
        await self.bases.restore(self.machine, [entry])
        spend, held = c.spend(), self.machine.spends.get(c.requester)
        richer = spend is not None and (held is None or held.cumulative < spend.cumulative)
        if self.machine.caps.get(entry.line) == entry.amount and not richer:
            return False  # a repeat
        try:
            check_cap(self.chain.domain, c)
            if spend is not None and richer:
                self.machine.on_spend(spend)
            self.machine.cap(entry, c.voucher_sig)
        except Invalid as exc:
            log.info("anchoring: cap refused", extra={"task": c.ref.text(), "error": str(exc)})
            return False
        self.refs[entry.line] = c.ref
        await self.cap_echo.took(entry.line, c)
        await self._save()
        log.info("line capped", extra={"task": c.ref.text(), "wei": str(c.amount_wei)})
        return True

    async def step(self) -> None:
        """One look at the chain: disputes, the window, the epoch timer; then save."""
        m = self.machine
        assert m is not None
        for line, ref in list(self.refs.items()):
            if line in m.latest and await self.chain.excluded(ref):
                m.forget(line)
        await self._recheck_held()
        await self.gossip.entries(m, self.leaves_per_message)  # before it may become final below
        # the time first: a dispute mined after this read is one the chain let in before it
        now_ms = await self.service.call(lambda c: c.chain.now() * 1000)
        effects = await self._observe()
        await self.sums.step(m)  # see node.chain.audit_answers
        shown = await self._shown_for_stuck()  # see Follower.shown
        halted = self.follower.stuck is not None and not self.history.due() and not shown
        anchors = [] if halted else await self._anchors(now_ms)
        may_post = self.active = not halted and self.follower.may_post(
            m, anchors, now_ms, self.window_ms
        )
        await self.auditor.step(m, anchors, self.follower.heard, now_ms, self.window_ms)
        debited = await self._debited(m.to_post(now_ms)) if may_post else {}
        was = (m.state, m.index, m.pending)
        ticked = m.on_tick(now_ms, debited, may_post=may_post)
        self._tell_short()
        if was[0] == "pending" and was[2] is not None and m.pending is not was[2]:
            self.final = (was[1], dict(m.base_earnings))
            await self.history.record(was[1], was[2])
            self._settle_due = True
        restore = functools.partial(self.bases.restore, m)
        roots = [a.entries_root for a in anchors]  # the chain's: a made-up root restores none
        while await restore([e for r in roots for e in self.follower.heard.get(r, {}).values()]):
            pass  # entries heard during the read may name more lines
        for index, epoch in (  # catch_up rebuilds at once: nothing heard in between
            [] if halted else await self.history.catch_up(self.follower, m, anchors, restore)
        ):
            self.final = (index, dict(epoch.earnings))  # paid out and sent once it is our turn
            self._settle_due = True
        if self._settle_due:  # the base moved: let go of the lines it anchored in full
            await self.bases.settle(m)
            self._settle_due = False
            self.refs = {line: ref for line, ref in self.refs.items() if line in m.latest}
        await self._save()
        for effect in [*effects, *ticked]:
            await self._perform(effect)
        await self._save()
        await self.gossip.entries(m, self.leaves_per_message)
        await self._pay_out()  # before the leaves go out: workers then find nothing to claim
        if self.active:
            await self.gossip.leaves(self.final, self.leaves_per_message)

    async def _shown_for_stuck(self) -> bool:
        """Reads the leaves shown on chain for the epoch we cannot rebuild, once (a final
        epoch's leaves can be shown no more): an epoch whose tree is not the sorted one is
        followed from them. Whether there were any."""
        stuck = self.follower.stuck
        if stuck is None or stuck in self.follower.shown:
            return False
        parts = await self.service.call(lambda c: c.leaves_shown(stuck))
        self.follower.shown[stuck] = parts
        return parts is not None

    async def _anchors(self, now_ms: int) -> list[ChainAnchor]:
        """The chain's anchors after our latest epoch, and its latest (see ``anchors_after``)."""
        assert self.machine is not None
        first, now_s = self.machine.index, now_ms // 1000
        found: list[ChainAnchor] = await self.service.call(lambda c: c.anchors_after(first, now_s))
        return found

    async def _pay_out(self) -> None:
        """A payout that fails (the sentry's wallet short of gas coin, an outage) is tried again
        next step; it must not stop the gossip that lets workers claim by themselves. Only the
        anchorer whose turn it is pays out (and sends leaves): the others would race it."""
        if self.final is None or not self.active:
            return
        try:
            await self.payer.pay(FinalLeaves(self.final[0], b"", self.final[1]))
        except Exception as exc:
            log.warning("payout failed, workers can still claim: %r", exc)

    async def _debited(self, requesters: set[bytes]) -> dict[bytes, int]:
        """What the chain's anchors (ours or another anchorer's) debited each pool in all."""
        out: dict[bytes, int] = {}
        for r in sorted(requesters):
            who = "0x" + r.hex()
            # the lambda runs before the loop moves on (awaited here), so `who` is this one's
            pool: dict[str, int] = await self.service.call(lambda c: c.pool_of(who))  # noqa: B023
            out[r] = int(pool["debited"])
        return out

    def _tell_short(self) -> None:
        """Logs once per requester that its lines wait for a larger spend."""
        m = self.machine
        assert m is not None
        for r, needed in m.short.items():
            if r not in self._short_told:
                held = m.spends.get(r)
                have = "none" if held is None else str(held.cumulative)
                log.warning("anchoring: requester's spend does not cover its debit; its lines "
                            "wait for a later epoch", extra={"requester": "0x" + r.hex(),
                            "needed_wei": str(needed), "spend_wei": have})  # fmt: skip
        self._short_told = set(m.short)

    async def _recheck_held(self) -> None:
        """Vouchers the hook excluded are asked about again each step, for HOLD_EPOCHS."""
        oldest = self.net.now_ms() - HOLD_EPOCHS * self.chain.settings.epoch_s * 1000
        for line, (v, since) in list(self.held.items()):
            if since < oldest:
                del self.held[line]
            elif not await self.chain.excluded(v.ref):
                del self.held[line]
                await self.on_voucher(v)

    async def _observe(self) -> list[Effect]:
        m = self.machine
        assert m is not None
        if m.state != "pending":
            return []
        index = m.index
        disputed, answered, voided = await self.service.call(lambda c: anchor_events(c, index))
        if voided:
            m.on_voided(index)
            return []
        effects: list[Effect] = []
        # Only this epoch's: events are read for the pending epoch alone, and the next one
        # pending has a larger index (posts take later ones), so an older epoch's leaves are
        # never read again. Per epoch, as a leaf names none: an epoch voided has its entries
        # anchored again with the same leaves, whose disputes there must be answered again.
        seen = self.seen_disputes.get(index, set())
        self.seen_disputes = {index: seen}
        # One answered (before a restart too) is not answered again: that would revert. Not
        # kept as seen either, so a reorg that drops its answer has it answered again.
        for leaf in disputed - answered - seen:
            seen.add(leaf)
            effects += m.on_disputed(index, leaf)
        for leaf in answered & m.open_disputes:
            m.on_answered(leaf)
        return effects

    async def _perform(self, effect: Effect) -> None:
        m = self.machine
        assert m is not None
        if isinstance(effect, Post):
            try:  # waits through outages: the journal row is finished by reconcile
                await self.service.call(lambda c: c.post_anchor(effect.epoch, effect.spends))
            except ChainReverted as exc:
                log.warning("anchoring: post refused: %s", exc)
            except ChainError as exc:
                log.warning("anchoring: post interrupted, reconciling: %s", exc)
                await self.service.reconcile_until_done()
            await self._resolve_post()
            return
        try:
            if isinstance(effect, Answer):
                await self.service.call(lambda c: c.answer(effect.index, effect.entry,
                                                           effect.signature))  # fmt: skip
            elif isinstance(effect, Finalize):
                await self.service.call(lambda c: c.finalize(effect.index))
                self.final = (effect.index, dict(m.base_earnings))
        except ChainError as exc:
            log.warning("anchoring: %s failed: %s", type(effect).__name__, exc)
            if isinstance(effect, Answer) and not isinstance(exc, ChainReverted):
                # not sent, or not known to be mined: seen again at the next step, answered
                # again unless the chain shows it answered by then (a revert would repeat)
                self.seen_disputes.get(effect.index, set()).discard(effect.entry.leaf())

    async def _resolve_post(self) -> None:
        """After a post (or a crash during one): is one of the chain's anchors after our last
        our epoch? Usually the latest, pending; after a crash it may be final already (anyone
        may finalize it) or voided, or others may have posted since."""
        m = self.machine
        assert m is not None and m.pending is not None
        now_ms = await self.service.call(lambda c: c.chain.now() * 1000)
        roots = (m.pending.earnings_tree.root, m.pending.entries_tree.root)
        found = [a for a in await self._anchors(now_ms)
                 if a.index > m.index and (a.earnings_root, a.entries_root) == roots]  # fmt: skip
        if not found:
            m.on_post_failed()
            await self._save()
            return
        ours, entries = found[0], len(m.pending.entries)
        m.on_posted(ours.index, ours.posted_ms + self.window_ms)
        if ours.state == "void":
            m.on_voided(ours.index)
        await self._save()
        self.posted += 1
        log.info("epoch anchored", extra={"epoch": ours.index, "entries": entries})

    async def _load(self, fee_bps: int) -> Anchoring:
        row = await self.db.query_one("SELECT state FROM settle_anchoring WHERE id = 1")
        if row is None:
            return Anchoring(epoch_ms=self.chain.settings.epoch_s * 1000, fee_bps=fee_bps)
        doc = msgpack.unpackb(row["state"])
        machine = anchoring_state.load(doc["machine"])
        machine.epoch_ms = self.chain.settings.epoch_s * 1000  # the setting may have changed
        machine.fee_bps = fee_bps  # the contract's: leaves net of another fee could be voided
        if doc.get("final") is not None:
            index, leaves = doc["final"]
            self.final = (int(index), {bytes(w): int(a) for w, a in leaves})
        self.follower.load(doc.get("heard", []))
        log.info("anchoring resumed", extra={"state": machine.state, "index": machine.index})
        return machine

    async def _save(self) -> None:
        assert self.machine is not None
        final = None if self.final is None else [
            self.final[0], [[w, str(a)] for w, a in self.final[1].items()]
        ]  # fmt: skip
        blob = msgpack.packb({"machine": anchoring_state.dump(self.machine), "final": final,
                              "heard": self.follower.dump()})  # fmt: skip
        await self.db.execute(
            "INSERT INTO settle_anchoring (id, state, updated_ms) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
            "updated_ms = excluded.updated_ms",
            (blob, self.net.now_ms()),
        )

    async def status(self) -> dict[str, Any]:
        m = self.machine
        if m is None:
            return {"state": "starting"}
        return {
            "state": m.state,
            "index": m.index,
            "lines": len(m.latest),
            "pending_entries": 0 if m.pending is None else len(m.pending.entries),
            "final_epoch": None if self.final is None else self.final[0],
            "posted_here": self.posted,
            "paid_out_epoch": None if self.payer.done is None else self.payer.done.index,
            "workers_paid_out_here": self.payer.paid,
            "stopped_at_epoch": self.follower.stuck,  # an epoch not rebuilt (yet): no posting
        }
