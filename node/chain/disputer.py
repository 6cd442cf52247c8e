"""The requester's disputes (started with ``requester/settlement``): entries in, disputes and
voids out.

While an epoch is pending, its anchorer gossips the entries on ``anchors``
(:class:`EpochEntries`: per requester, each entry with its Merkle proof and the voucher the
anchorer holds for it). This service keeps those naming this node's chain address for the
latest anchor, and on every ``chain.poll_s`` (or as soon as new entries arrive):

1. reads the latest anchor; while it is pending, its window open and its ``entries_root`` the
   root the entries proved to, checks them (:func:`consensus.settlement.disputes.disputable`)
   against what this node signed: per task attempt, the largest voucher sent (``attempts``),
   its cap when the attempt closed lower (``payable_wei``), and the worker's address
   (``settle_peers``); an entry shown with our own voucher signature for its amount counts as
   signed, however far our records lag;
2. writes each new finding to ``settle_disputes`` (state ``found``) BEFORE sending anything;
3. moves each open dispute one step (:func:`consensus.settlement.disputes.next_step`): dispute
   with the proof; once the answer time is over, void the anchor with the debits read from
   its ``postAnchor`` call (which slashes the anchorer's bond, half of it to us).

Exactly once: each step asks the chain first (is the leaf disputed? is the epoch void?), the
transactions are journaled, and a crash between a send and its row update is finished by
``reconcile`` at start-up; so a kill -9 neither disputes twice nor forgets to void.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from consensus.errors import Invalid
from consensus.settlement.disputes import (
    ABOVE_CAP,
    FINAL_STATES,
    ChainView,
    Finding,
    disputable,
    next_step,
)
from consensus.settlement.eip712 import ChainVoucher, chain_job_id, chain_task_id
from consensus.settlement.epoch import Entry, Line
from consensus.settlement.merkle import verify
from consensus.settlement.messages import EpochEntries
from node.chain.audit_calls import ANSWERED, SumDispute
from node.chain.debit_watch import DebitWatch
from node.chain.epoch_calls import entry_args
from node.chain.errors import ChainError, ChainReverted, DisputeRefused, survive
from node.chain.payee import ANCHOR_KINDS, ANCHORS
from node.chain.signing import voucher_signer
from storage.db import Database

if TYPE_CHECKING:
    import sqlite3

    from trio_typing import TaskStatus

    from node.chain.node import ChainNode
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
BY_HAND = "by hand"
WAIT_ROOTS = 4  # roots of a next anchor kept waiting: the real one and a few forged ones
WAIT_PARTS = 256  # messages kept per waiting root (48 entries each)
CHUNK = 500  # job ids per sqlite query
SIGNED_SQL = (
    "SELECT a.job_id, a.idx, a.attempt, a.vouched_wei, a.payable_wei, p.address "
    "FROM attempts a JOIN settle_peers p ON p.peer_id = a.worker WHERE a.job_id IN "
)


@dataclass(frozen=True)
class Heard:
    entry: Entry
    proof: list[bytes]
    shown: bool  # came with our own valid voucher signature for exactly its amount
    from_answer: bool = False  # read from an audit answer on chain (no voucher comes with it)


class Disputer:
    def __init__(self, chain: ChainNode, db: Database, net: MarketNet) -> None:
        self.chain, self.db, self.net = chain, db, net
        self.me = bytes.fromhex(chain.address[2:])
        self.latest: dict[str, Any] | None = None  # the chain's latest anchor, last read
        self.heard: dict[bytes, Heard] = {}  # leaf -> ours, for self.latest only
        # Entries of an anchor the chain did not show yet when they came: (index, root) -> parts
        self.waiting: dict[tuple[int, bytes], dict[int, EpochEntries]] = {}
        self._warned: set[bytes] = set()  # answerable findings already logged
        self._answers_read = 0  # sum disputes of self.latest whose answers were read
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one step at a time: the service's, or one asked by hand
        self.debits = DebitWatch(chain, self.me)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.net.subscribe(ANCHORS, ANCHOR_KINDS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow, inbox)
            task_status.started()
            while True:
                await survive(self.step, "disputes", log)
                with trio.move_on_after(self.chain.settings.poll_s):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _follow(self, inbox: Any) -> None:
        async for message in inbox:
            body = message.opened.body if message.opened else None
            if isinstance(body, EpochEntries) and body.requester == self.me:
                try:
                    if await self.hear(body):
                        self._wake.set()
                except ChainError as exc:  # the anchorer sends them again
                    log.warning("disputes: entries not read: %s", exc)

    async def hear(self, msg: EpochEntries) -> int:
        """Keeps ``msg``'s entries if they are the latest anchor's, or may be the next one's
        (the chain, as we last read it, may not show that anchor yet: they wait in a small
        buffer until it does); how many entries were new."""
        key = (msg.index, msg.entries_root)
        if key == self._anchor_key():
            return self._take(msg)
        latest = None if self.latest is None else int(self.latest["epoch"])
        if latest is not None and msg.index not in (latest, latest + 1):
            return 0  # an old epoch's, or a future that cannot be anchored next
        if latest == msg.index:
            return 0  # not the root on chain: a forged or a replaced one
        if key not in self.waiting:
            if len(self.waiting) >= WAIT_ROOTS:
                self.waiting.pop(next(iter(self.waiting)))  # the oldest root heard goes
            self.waiting[key] = {}
        parts = self.waiting[key]
        if msg.part in parts or len(parts) >= WAIT_PARTS:
            return 0
        parts[msg.part] = msg
        return len(msg.rows)

    def _take(self, msg: EpochEntries) -> int:
        new = 0
        for entry, proof, sig in msg.entries():
            leaf = entry.leaf()
            if leaf not in self.heard or (not self.heard[leaf].shown and sig):
                new += leaf not in self.heard
                self.heard[leaf] = Heard(entry, proof, self._ours(entry, sig))
        if new:
            log.info("epoch entries heard", extra={"epoch": msg.index, "new": new,
                                                   "entries": len(self.heard)})  # fmt: skip
        return new

    def _ours(self, entry: Entry, sig: bytes) -> bool:
        if not sig:
            return False
        v = ChainVoucher(entry.job, entry.task, entry.worker, entry.amount)
        try:
            return voucher_signer(self.chain.domain, v, sig).lower() == self.chain.address.lower()
        except ValueError:  # Invalid: a malformed signature shows nothing
            return False

    def _anchor_key(self) -> tuple[int, bytes] | None:
        a = self.latest
        return None if a is None else (int(a["epoch"]), bytes(a["entries_root"]))

    async def _read_anchor(self) -> dict[str, Any]:
        latest = await self.chain.service.call(lambda c: c.anchor())
        key = (int(latest["epoch"]), bytes(latest["entries_root"]))
        if key != self._anchor_key():
            # Compared after the read: entries heard meanwhile, for this very anchor, are kept.
            self.heard, self._warned, self._answers_read = {}, set(), 0
        self.latest = latest
        for msg in self.waiting.pop(key, {}).values():
            self._take(msg)
        self.waiting = {k: v for k, v in self.waiting.items() if k[0] > key[0]}
        return latest

    # --- the service ----------------------------------------------------------------------

    async def step(self) -> None:
        """Checks the heard entries of a pending anchor, then moves every open dispute."""
        async with self._lock:
            await self._step()

    async def _step(self) -> None:
        anchor = await self._read_anchor()
        now = await self.chain.service.call(lambda c: c.chain.now())
        sums: list[SumDispute] = []
        if anchor["state"] == "pending":
            index = int(anchor["epoch"])
            sums = await self.chain.service.call(lambda c: c.sum_disputes(index, answered=True))
            try:  # what an answer holds is the anchorer's: it never stops the rest of the step
                await self._hear_answers(anchor, sums)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("disputes: audit answers not read: %r", exc)
        if anchor["state"] == "pending" and now < anchor["open_until"] and self.heard:
            for finding in await self.findings():
                if finding.answerable:
                    self._warn_answerable(finding)
                else:
                    await self._record(anchor["epoch"], finding, "found")
        heard = [(h.entry, h.proof) for h in self.heard.values()]
        await self.debits.step(anchor, now, heard, self._owed, sums)
        for row in await self.db.query(
            "SELECT * FROM settle_disputes WHERE state IN ('found', 'disputed') ORDER BY epoch"
        ):
            await self._move(row, anchor, now)

    async def _hear_answers(self, anchor: dict[str, Any], sums: list[SumDispute]) -> None:
        """Takes our entries from the answers to the pending anchor's sum disputes.

        An answer shows all of a worker's entries (earnings) or a requester's (debit), some
        perhaps never gossiped. One naming us that we never signed is then disputed like any
        heard one: otherwise an anchorer could answer our debit dispute with an entry it made
        up for us, or pay a colluding worker from one shown only in that worker's answer.
        Read again only when another dispute has been answered.
        """
        answered = sum(d.answer_by == ANSWERED for d in sums)
        if answered <= self._answers_read:
            return
        index, root = int(anchor["epoch"]), bytes(anchor["entries_root"])
        answers = await self.chain.service.call(lambda c: c.sum_answers(index))
        new = 0
        for _, _, entries, multi in answers:
            try:  # the contract takes an answer of no entries with any proof: trust nothing
                proofs = multi.single_proofs()
            except Invalid:
                continue
            for e in entries:
                leaf = e.leaf()
                mine = e.requester == self.me and leaf not in self.heard
                if mine and verify(root, leaf, proofs.get(leaf, [])):
                    self.heard[leaf] = Heard(e, proofs[leaf], shown=False, from_answer=True)
                    new += 1
        self._answers_read = answered
        if new:
            log.info("entries of ours shown in audit answers", extra={
                "epoch": index, "new": new, "entries": len(self.heard)})  # fmt: skip

    async def _owed(self) -> int:
        """What we owe in all by our records: each attempt's largest voucher, or its cap."""
        rows = await self.db.query("SELECT vouched_wei, payable_wei FROM attempts")
        total = 0
        for r in rows:
            vouched = int(r["vouched_wei"] or 0)
            cap = r["payable_wei"]
            total += vouched if cap is None else min(vouched, int(cap))
        return total

    async def findings(self) -> list[Finding]:
        """What to dispute among the heard entries, by what this node signed."""
        entries = [h.entry for h in self.heard.values()]
        signed, caps = await self._signed(entries)
        shown = {leaf for leaf, h in self.heard.items() if h.shown}
        found = disputable(entries, self.me, signed, caps, shown)
        # An entry read from an answer comes without the voucher the anchorer holds: above our
        # cap but within what we signed, it may well hold one for that amount (cumulative
        # vouchers) and would answer, so it is only warned about, as a shown one is.
        unvouched = {leaf for leaf, h in self.heard.items() if h.from_answer}
        return [replace(f, answerable=True) if f.reason == ABOVE_CAP and f.entry.leaf()
                in unvouched else f for f in found]  # fmt: skip

    async def _signed(self, entries: list[Entry]) -> tuple[dict[Line, int], dict[Line, int]]:
        """The largest voucher sent per line, and the caps, for the jobs ``entries`` name."""
        pad = b"\0" * 16  # chain_job_id pads our 16-byte job ids
        jobs = sorted({e.job[:16] for e in entries if e.job[16:] == pad})
        signed: dict[Line, int] = {}
        caps: dict[Line, int] = {}
        for i in range(0, len(jobs), CHUNK):
            part = jobs[i : i + CHUNK]
            marks = ", ".join("?" * len(part))  # placeholders only: no data in the SQL text
            rows = await self.db.query(SIGNED_SQL + f"({marks})", part)
            for r in rows:
                worker = bytes.fromhex(r["address"][2:])
                line = (chain_job_id(r["job_id"]), chain_task_id(r["idx"], r["attempt"]), worker)
                vouched = int(r["vouched_wei"])
                signed[line] = max(signed.get(line, 0), vouched)
                if r["payable_wei"] is not None and int(r["payable_wei"]) < vouched:
                    caps[line] = int(r["payable_wei"])
        return signed, caps

    def _warn_answerable(self, f: Finding) -> None:
        leaf = f.entry.leaf()
        if leaf not in self._warned:
            self._warned.add(leaf)
            log.warning("anchored over our cap, not disputed: the anchorer holds our voucher "
                        "for it and would answer", extra={"detail": f.detail})  # fmt: skip

    async def _record(self, epoch: int, f: Finding, state: str) -> bool:
        """Writes ``f`` once (before anything is sent); True if it is new."""
        leaf = f.entry.leaf()
        proof = b"".join(self.heard[leaf].proof)
        now = self.net.now_ms()
        added = await self.db.execute(
            "INSERT OR IGNORE INTO settle_disputes (epoch, leaf, worker, job, task, amount_wei, "
            "previous_wei, proof, reason, detail, state, created_ms, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (epoch, leaf, "0x" + f.entry.worker.hex(), f.entry.job, f.entry.task,
             str(f.entry.amount), str(f.entry.previous), proof, f.reason, f.detail, state, now,
             now),
        )  # fmt: skip
        if added:
            log.warning("anchored entry to dispute", extra={
                "epoch": epoch, "reason": f.reason, "detail": f.detail,
            })  # fmt: skip
        return bool(added)

    async def _move(self, row: sqlite3.Row, anchor: dict[str, Any], now: int) -> None:
        epoch, leaf = int(row["epoch"]), bytes(row["leaf"])
        latest = int(anchor["epoch"])
        answer_by = await self.chain.service.call(lambda c: c.answer_by(epoch, leaf))
        voided = (latest == epoch and anchor["state"] == "void") or (
            latest != epoch and await self.chain.service.call(lambda c: c.voided(epoch))
        )
        view = ChainView(latest, str(anchor["state"]), int(anchor["open_until"]),
                         answer_by, voided, now)  # fmt: skip
        state, action = next_step(row["state"], epoch, view)
        error = ""
        try:
            if action == "dispute":
                state, answer_by = await self._dispute(row)
            elif action == "void":
                state = await self._void(row)
        except ChainReverted as exc:  # the next poll asks the chain what became of it
            log.warning("disputes: %s of epoch %d refused: %s", action, epoch, exc)
            error = str(exc)[:300]
        if state != row["state"] or error or answer_by != (row["answer_by"] or 0):
            await self.db.execute(
                "UPDATE settle_disputes SET state = ?, answer_by = ?, error = ?, updated_ms = ? "
                "WHERE epoch = ? AND leaf = ?",
                (state, answer_by or row["answer_by"], error, self.net.now_ms(), epoch, leaf),
            )
        if state != row["state"] and state in FINAL_STATES:
            log.warning("dispute %s", state, extra={
                "epoch": epoch, "reason": row["reason"], "detail": row["detail"],
            })  # fmt: skip

    async def _dispute(self, row: sqlite3.Row) -> tuple[str, int]:
        epoch, entry = int(row["epoch"]), self._entry(row)
        proof = [bytes(row["proof"][i : i + 32]) for i in range(0, len(row["proof"]), 32)]
        sent = await self.chain.service.submit("dispute", [epoch, entry_args(entry), proof])
        if sent is not None and sent.dry_run:
            return "found", 0
        answer_by = await self.chain.service.call(lambda c: c.answer_by(epoch, entry.leaf()))
        log.warning("anchored entry disputed", extra={
            "epoch": epoch, "reason": row["reason"], "detail": row["detail"],
            "answer_by": answer_by,
        })  # fmt: skip
        return ("disputed" if answer_by else "found"), answer_by

    async def _void(self, row: sqlite3.Row) -> str:
        epoch, entry = int(row["epoch"]), self._entry(row)
        debits = await self.chain.service.call(lambda c: c.anchor_debits(epoch))
        requesters, amounts = [r for r, _ in debits], [a for _, a in debits]
        sent = await self.chain.service.submit(
            "voidAnchor", [epoch, entry_args(entry), requesters, amounts]
        )
        if sent is not None and sent.dry_run:
            return "disputed"
        if sent is None:  # an outage: reconcile finished it; the next poll reads the outcome
            return "disputed"
        log.warning("anchor voided: its anchorer did not answer our dispute", extra={
            "epoch": epoch, "reason": row["reason"], "detail": row["detail"],
        })  # fmt: skip
        return "voided"

    def _entry(self, row: sqlite3.Row) -> Entry:
        worker = bytes.fromhex(row["worker"][2:])
        return Entry(self.me, worker, bytes(row["job"]), bytes(row["task"]),
                     int(row["amount_wei"]), int(row["previous_wei"]))  # fmt: skip

    # --- by hand (``idlegrid wallet dispute``) and status -------------------------------------

    async def by_hand(
        self, epoch: int, job: bytes, worker: bytes, task: bytes | None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Disputes our entries of ``epoch`` for (job, worker[, task]) now, whatever the check
        says (its reason is kept when it has one); the service voids them if unanswered.

        Raises:
            DisputeRefused: the epoch is not the pending anchor, or no such entry was heard.
        """
        async with self._lock:
            out = await self._by_hand(epoch, job, worker, task, dry_run)
        rows = {bytes(r["leaf"]): r for r in await self.db.query(
            "SELECT leaf, state, answer_by, error FROM settle_disputes WHERE epoch = ?", (epoch,)
        )}  # fmt: skip
        for item in out:
            r = rows.get(item.pop("leaf"))
            item.update(state="dry run" if r is None else r["state"],
                        answer_by=None if r is None else r["answer_by"],
                        error="" if r is None else r["error"])  # fmt: skip
        return {"epoch": epoch, "dry_run": dry_run, "disputes": out}

    async def _by_hand(
        self, epoch: int, job: bytes, worker: bytes, task: bytes | None, dry_run: bool
    ) -> list[dict[str, Any]]:
        anchor = await self._read_anchor()
        now = await self.chain.service.call(lambda c: c.chain.now())
        if anchor["epoch"] != epoch or anchor["state"] != "pending":
            raise DisputeRefused(f"epoch {epoch} is not pending (the latest anchor is "
                                 f"{anchor['epoch']}, {anchor['state']})")  # fmt: skip
        if now >= anchor["open_until"]:
            raise DisputeRefused(f"epoch {epoch}: the dispute window closed at "
                                 f"{anchor['open_until']} (chain time {now})")  # fmt: skip
        chosen = [h.entry for h in self.heard.values() if h.entry.job == job
                  and h.entry.worker == worker and task in (None, h.entry.task)]  # fmt: skip
        if not chosen:
            raise DisputeRefused(
                f"no entry of ours for job 0x{job.hex()} worker 0x{worker.hex()} heard in epoch "
                f"{epoch} ({len(self.heard)} heard; the anchorer gossips them while it is pending)"
            )
        reasons = {f.entry: f for f in await self.findings()}
        out = []
        for e in chosen:
            shown = self.heard[e.leaf()].shown
            f = reasons.get(e) or Finding(e, BY_HAND, f"{e.amount} wei, disputed by hand", shown)
            if not dry_run:
                await self._record(epoch, f, "found")
            out.append({"leaf": e.leaf(), "job": "0x" + e.job.hex(), "task": "0x" + e.task.hex(),
                        "worker": "0x" + e.worker.hex(), "amount_wei": str(e.amount),
                        "reason": f.reason, "detail": f.detail,
                        "answerable": f.answerable})  # fmt: skip
        if not dry_run:
            await self._step()  # sends them now
        return out

    async def status(self) -> dict[str, Any]:
        rows = await self.db.query(
            "SELECT epoch, state, reason, detail, answer_by FROM settle_disputes "
            "ORDER BY epoch DESC, created_ms DESC"
        )
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return {
            "heard_epoch": None if self.latest is None else self.latest["epoch"],
            "heard_entries": len(self.heard),
            "disputes": counts,
            "recent": [dict(r) for r in rows[:10]],
        }
