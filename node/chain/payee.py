"""The worker's side of settlement: check each voucher's chain twin, keep the latest per task,
hand it to the anchorers when the task ends, and claim anchored earnings.

- Check: a voucher whose requester settles on chain (its order named a ``requester_address``)
  must carry that account's EIP-712 signature for exactly the voucher's amount, and its
  ``Spend`` of at least that amount (what lets an anchor debit its pool); one that does not is
  treated as no voucher at all, so the worker stops after the grace period as it does when
  vouchers stop.
- Keep: the latest signed voucher per task attempt with its spend, in ``settle_vouchers``.
- Submit: when a task ends, its voucher is gossiped on ``anchors`` as a
  :class:`SettledVoucher`; it is gossiped again every half epoch until an anchor on chain shows
  its line at that amount (the anchorer's :class:`EpochEntries`, whose root must be the
  chain's; the amount shown is kept in sqlite), for up to a day (gossip is lossy, anchorers
  can be cut off for a while; anchorers keep the largest per line, so repeats cost nothing).
  A capped line (a failover: the requester signs that only the seconds up to the checkpoint
  it holds are owed) is due only its cap: once the worker hears a cap that its requester
  signed, it resends the line only while no anchor shows the cap, and judges arrears by it.
- Arrears: :class:`~node.chain.arrears.ArrearsWatch` judges requesters whose lines no anchor
  takes; the bidder declines their work (``chain.arrears_anchors``).
- Claim: anchorers gossip each final epoch's earnings leaves; the worker rebuilds the tree,
  uses it only if its root is the contract's ``claimRoot``, and claims with a Merkle proof once
  ``chain.claim_threshold_wei`` is claimable (or at once on ``idlegrid wallet claim``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import Wei
from consensus.market.messages import TaskRef, Voucher
from consensus.settlement.eip712 import chain_job_id, chain_task_id
from consensus.settlement.epoch import Spend
from consensus.settlement.leaves import FinalLeaves, LeavesAssembly
from consensus.settlement.messages import EpochEntries, EpochLeaves, SettledVoucher, VoucherCap
from node.chain.arrears import ArrearsWatch, due_wei
from node.chain.errors import ChainError
from node.chain.signing import check_cap
from p2p.gossip import topic_name
from storage.db import Database

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.client import Settlement
    from node.chain.node import ChainNode
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
ANCHORS = topic_name("anchors")
RESUBMIT_MAX_MS = 24 * 3600 * 1000  # a voucher no anchor has shown is resent this long
TTL_MS = 10 * 60 * 1000
MAX_SENDERS = 8  # of epoch leaves being collected at once
ROOTS_KEPT = 4  # the latest entries roots found on chain (one per anchor)
# Every service on ``anchors`` subscribes with all of them: the last subscription sets what
# the topic's validator accepts, and a kind missing there would be refused from honest peers.
ANCHOR_KINDS = frozenset(
    {SettledVoucher.KIND, VoucherCap.KIND, EpochLeaves.KIND, EpochEntries.KIND}
)


class Payee:
    def __init__(
        self, chain: ChainNode, db: Database, net: MarketNet, verify_hold_ms: int = 0
    ) -> None:
        """``verify_hold_ms``: how long anchorers may hold an ended task back for its verdict
        (``verify.verdict_timeout_ms``); the arrears watch waits it out."""
        self.chain, self.db, self.net = chain, db, net
        self.me = bytes.fromhex(chain.address[2:])
        self.leaves: FinalLeaves | None = None  # the latest that matched the contract's root
        # parts of a newer one whose root the chain holds, per signer: a forged part from
        # one peer cannot spoil the set another peer sends
        self._assembling: dict[str, LeavesAssembly] = {}
        self.last_claim: dict[str, Any] | None = None
        self._unsendable: set[TaskRef] = set()  # rows without a spend, warned about once
        self._claiming = trio.Lock()
        self._roots_on_chain: dict[bytes, None] = {}  # the latest found last
        self.arrears = ArrearsWatch(chain, db, net.now_ms, verify_hold_ms)

    # --- the market's hooks ---------------------------------------------------------------

    def check(self, voucher: Voucher, requester: str) -> Spend:
        """The requester's spend that came with ``voucher``; raises Invalid unless
        ``requester`` signed the chain twin of this voucher and a spend covering it."""
        if voucher.chain_sig is None:
            raise Invalid("voucher.chain_sig", "missing: the requester settles on chain")
        if voucher.spend_wei is None or voucher.spend_sig is None:
            raise Invalid("voucher.spend", "missing: the requester settles on chain")
        hook, amount = self.chain.hook, voucher.amount_wei
        hook.check(voucher.ref, self.chain.address, amount, voucher.chain_sig, requester)
        spend = Spend(bytes.fromhex(requester[2:]), int(voucher.spend_wei), voucher.spend_sig)
        hook.check_spend(spend, amount, requester)
        return spend

    async def keep(
        self, ref: TaskRef, requester: str, amount_wei: int, sig: bytes, spend: Spend,
        *, peer: str = "",
    ) -> None:  # fmt: skip
        """Keeps the largest voucher per task attempt, and the spend that came with it
        (``peer``: the requester's peer id, whom the bidder declines if it falls in arrears)."""
        await self.db.execute(
            "INSERT INTO settle_vouchers (job_id, idx, attempt, requester, amount_wei, sig, "
            "updated_ms, spend_wei, spend_sig, requester_peer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(job_id, idx, attempt) DO UPDATE SET amount_wei = excluded.amount_wei, "
            "sig = excluded.sig, updated_ms = excluded.updated_ms, "
            "spend_wei = excluded.spend_wei, spend_sig = excluded.spend_sig "
            "WHERE CAST(excluded.amount_wei AS INTEGER) > CAST(amount_wei AS INTEGER)",
            (ref.job_id, ref.task, ref.attempt, requester, str(amount_wei), sig,
             self.net.now_ms(), str(spend.cumulative), spend.signature, peer),
        )  # fmt: skip

    async def ended(self, ref: TaskRef) -> None:
        now = self.net.now_ms()
        await self.db.execute(
            "UPDATE settle_vouchers SET ended_ms = ? "
            "WHERE job_id = ? AND idx = ? AND attempt = ? AND ended_ms IS NULL",
            (now, ref.job_id, ref.task, ref.attempt),
        )
        await self._submit(0, [ref])

    # --- the service ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.net.subscribe(ANCHORS, ANCHOR_KINDS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._resubmit_loop)
            nursery.start_soon(self.arrears.run)
            nursery.start_soon(self.warn_if_unstaked)
            task_status.started()
            async for message in inbox:
                body = message.opened.body if message.opened else None
                try:
                    if isinstance(body, EpochLeaves):
                        assert message.opened is not None
                        await self._on_leaves(body, message.opened.signer_peer_id)
                    elif isinstance(body, EpochEntries):
                        await self._on_entries(body)
                    elif isinstance(body, VoucherCap):
                        await self.on_cap(body)
                except Exception as exc:  # an outage: the anchorer sends them again
                    log.warning("anchor message not checked: %r", exc)

    async def warn_if_unstaked(self) -> bool:
        """Says so at start when this worker has no stake: it is still paid, but sentries can
        slash nothing, so requesters have its reputation alone to trust. True if it warned."""
        try:
            bonded = (await self.chain.service.call(lambda c: c.stake_of()))["bonded"]
        except ChainError:  # an outage: the next start says it
            return False
        if bonded:
            return False
        log.warning("worker without stake: sentries could slash nothing if it cheated; "
                    "stake with `idlegrid wallet stake 1eth`")  # fmt: skip
        return True

    async def _resubmit_loop(self) -> None:
        """Gossip is lossy and anchorers can be cut off for a while: every half epoch, resend
        each ended voucher that no anchor on chain has shown yet, for up to a day."""
        while True:
            await self._submit(self.net.now_ms() - RESUBMIT_MAX_MS, None, unanchored=True)
            await trio.sleep(max(self.chain.settings.epoch_s / 2, self.chain.settings.poll_s))

    async def on_cap(self, cap: VoucherCap) -> bool:
        """Notes a requester's cap on one of our lines, if the requester signed it: the line is
        then due only the cap (anchorers anchor no more). True when it was taken."""
        if cap.worker != self.me:
            return False
        try:
            check_cap(self.chain.domain, cap)
        except Invalid as exc:
            log.info("cap refused", extra={"task": cap.ref.text(), "error": str(exc)})
            return False
        changed = await self.db.execute(
            "UPDATE settle_vouchers SET capped_wei = ? WHERE job_id = ? AND idx = ? "
            "AND attempt = ? AND lower(requester) = ? AND capped_wei IS NOT ?",
            (str(cap.amount_wei), cap.ref.job_id, cap.ref.task, cap.ref.attempt,
             "0x" + cap.requester.hex(), str(cap.amount_wei)),
        )  # fmt: skip
        if changed:
            log.info("line capped by its requester",
                     extra={"task": cap.ref.text(), "wei": str(cap.amount_wei)})  # fmt: skip
        return bool(changed)

    async def _on_entries(self, entries: EpochEntries) -> None:
        """Notes which of our lines an anchor shows, if its entries root is the chain's."""
        mine = [(e.job, e.task, e.amount) for e, _, _ in entries.entries() if e.worker == self.me]
        if not mine:
            return
        if entries.entries_root not in self._roots_on_chain:
            anchor = await self.chain.service.call(lambda c: c.anchor())
            if anchor["entries_root"] != entries.entries_root:
                return  # not the anchor on chain (stale, or not an anchorer's): no proof
            # Anchorers gossip an epoch's entries only while it is the chain's latest (pending),
            # so older roots are heard no more but from replays; one would be asked about again.
            self._roots_on_chain[entries.entries_root] = None
            while len(self._roots_on_chain) > ROOTS_KEPT:
                del self._roots_on_chain[next(iter(self._roots_on_chain))]
        shown = {(job, task): amount for job, task, amount in mine}
        requester = "0x" + entries.requester.hex()
        rows = await self.db.query(
            "SELECT job_id, idx, attempt, shown_wei FROM settle_vouchers "
            "WHERE lower(requester) = ?",
            (requester,),
        )
        for row in rows:  # the largest amount shown per line: a voucher covered is not resent
            line = (chain_job_id(row["job_id"]), chain_task_id(row["idx"], row["attempt"]))
            if shown.get(line, 0) > int(row["shown_wei"]):
                await self.db.execute(
                    "UPDATE settle_vouchers SET shown_wei = ? "
                    "WHERE job_id = ? AND idx = ? AND attempt = ?",
                    (str(shown[line]), row["job_id"], row["idx"], row["attempt"]),
                )

    async def _submit(
        self, since_ms: int, only: list[TaskRef] | None, *, unanchored: bool = False
    ) -> None:
        for row in await self._ended_rows(since_ms, only):
            ref = TaskRef(job_id=row["job_id"], task=row["idx"], attempt=row["attempt"])
            shown, capped = int(row["shown_wei"]), row["capped_wei"]
            if (unanchored or capped is not None) and shown >= due_wei(row):
                continue  # shown at what is due (a capped line perhaps never: due 0)
            try:
                voucher = SettledVoucher(
                    expires_ms=self.net.now_ms() + TTL_MS, nonce=new_nonce(), ref=ref,
                    requester=bytes.fromhex(row["requester"][2:]), worker=self.me,
                    amount_wei=Wei(int(row["amount_wei"])), signature=bytes(row["sig"]),
                    spend_wei=Wei(int(row["spend_wei"])), spend_sig=bytes(row["spend_sig"]),
                )  # fmt: skip
            except Invalid as exc:  # kept before spends existed (migration 13): no anchor takes it
                if ref not in self._unsendable:
                    self._unsendable.add(ref)
                    log.warning("voucher not sent to anchorers: %s", exc,
                                extra={"task": ref.text()})  # fmt: skip
                continue
            await self.net.publish(ANCHORS, voucher)

    async def _ended_rows(self, since_ms: int, only: list[TaskRef] | None) -> list[Any]:
        """The lines of ended tasks since ``since_ms`` (of ``only`` these, by key: a task's end
        is answered at once, so it must not read the worker's whole history)."""
        if only is None:
            return await self.db.query(
                "SELECT * FROM settle_vouchers WHERE ended_ms IS NOT NULL AND ended_ms >= ?",
                (since_ms,),
            )
        rows: list[Any] = []
        for ref in only:
            rows += await self.db.query(
                "SELECT * FROM settle_vouchers WHERE job_id = ? AND idx = ? AND attempt = ? "
                "AND ended_ms IS NOT NULL AND ended_ms >= ?",
                (ref.job_id, ref.task, ref.attempt, since_ms),
            )
        return rows

    async def _on_leaves(self, part: EpochLeaves, sender: str) -> None:
        """Collects the parts of a newer final epoch, per sender; claims once one set is whole.

        Only parts whose root the contract holds are kept, and each sender's apart, so parts
        of a forged set (anyone may gossip some) never mix with an honest anchorer's.
        """
        if self.leaves is not None and part.index <= self.leaves.index:
            return
        building = self._assembling.get(sender)
        if building is None or not building.matches(part):
            root = await self.chain.service.call(
                lambda c: bytes(c.contract.functions.claimRoot().call())
            )
            if root != part.earnings_root:
                return  # not final on chain yet (or not ours to trust): the anchorer resends
            building = self._assembling[sender] = LeavesAssembly.first(part)
            while len(self._assembling) > MAX_SENDERS:
                del self._assembling[next(iter(self._assembling))]
        try:
            whole = building.add(part)
        except Invalid as exc:
            log.warning("epoch leaves refused: %s", exc, extra={"peer": sender})
            del self._assembling[sender]
            return
        if whole is not None:
            self.leaves = whole
            self._assembling.clear()
            await self.claim(self.chain.settings.claim_threshold_wei)

    async def claim(self, threshold_wei: int = 1) -> dict[str, Any]:
        """Claims what the latest final epoch owes us, if at least ``threshold_wei``."""
        async with self._claiming:
            leaves = await self._latest_leaves()
            if leaves is None or self.me not in leaves.amounts:
                return {"claimed": False, "reason": "no final epoch names this worker yet"}
            cumulative = leaves.amounts[self.me]
            earned = await self.chain.service.call(lambda c: c.earned_of())
            if cumulative - earned < max(threshold_wei, 1):
                return {"claimed": False, "reason": f"claimable {cumulative - earned} wei",
                        "claimable_wei": str(cumulative - earned)}  # fmt: skip
            proof = leaves.proof_of(self.me)
            try:
                sent = await self.chain.service.submit("claimEarnings", [cumulative, proof])
            except ChainError as exc:
                return {"claimed": False, "reason": str(exc)}
            if sent is not None and sent.dry_run:
                return {"claimed": False, "reason": "dry run", "would_send": sent.would_send}
            self.last_claim = {"claimed": True, "epoch": leaves.index,
                               "cumulative_wei": str(cumulative),
                               "paid_wei": str(cumulative - earned)}  # fmt: skip
            log.info("earnings claimed", extra=self.last_claim)
            return self.last_claim

    async def _latest_leaves(self) -> FinalLeaves | None:
        """The gossiped leaves, unless the contract's claim root is another epoch's whose
        anchorer showed its leaves on chain (answering a demand for them, see
        :mod:`node.chain.auditor`): an anchorer that withholds them cannot hold back our pay."""

        def shown(c: Settlement) -> FinalLeaves | None:
            root = bytes(c.contract.functions.claimRoot().call())
            if self.leaves is not None and self.leaves.earnings_root == root:
                return self.leaves
            found = c.leaves_with_root(root)
            return None if found is None else FinalLeaves.of_shown(found[0], root, found[1])

        return await self.chain.service.call(shown) or self.leaves

    async def status(self) -> dict[str, Any]:
        rows = await self.db.query("SELECT amount_wei, ended_ms FROM settle_vouchers")
        return {
            "tasks": len(rows),
            "vouched_wei": str(sum(int(r["amount_wei"]) for r in rows)),
            "final_epoch": None if self.leaves is None else self.leaves.index,
            "last_claim": self.last_claim,
            "arrears": self.arrears.status(),  # requesters whose work we decline, and why
        }
