"""The requester's driver for one task: auction, supervise, fail over, collect the result.

One :class:`TaskRunner` per live task, started by the job manager. Its loop reads the task's
row, does the step its state calls for, and moves the row with compare-and-set, so a kill -9
at any point resumes from sqlite: a task found ``bidding`` auctions again (a new attempt),
one found ``running`` is supervised again (vouchers resume from the attempt's start), one
found ``attested`` fetches its result again.

    state                       step
    --------------------------  ---------------------------------------------------------
    queued / reassigned         open an auction (a reassigned task resumes from the last
                                checkpoint we hold)
    bidding                     publish the demand, rank bids, order the winner; no bids:
                                record why, wait, auction again until the deadline
    awarded/transferring/       every voucher interval: send a voucher, read the report
      running                   (progress, checkpoints, logs, result); silent for
                                lost_after_ms or stopped: fail over
                                (:mod:`node.market.supervision`)
    attested                    fetch the result and check its hash; then verified (a
                                worker that no longer holds it for lost_after_ms: fail over)
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.envelope import new_nonce
from consensus.kinds import Wei, from_wire, to_wire
from consensus.market import auction as au
from consensus.market.lifecycle import TERMINAL, TaskEvent, advance
from consensus.market.matching import candidates, explain, offers_for
from consensus.market.messages import (
    ANY_CLASS,
    MAX_DATA_HOLDERS,
    Award,
    BlobRef,
    Checkpoint,
    Demand,
    TaskOrder,
    TaskRef,
)
from consensus.market.meter import payable_after_failover
from consensus.market.spec import JobSpec
from consensus.pool import Worker
from node.market.blobshare import FetchFailed
from node.market.data_sharing import HOLDING, ask_holders
from node.market.datasets import grant_all
from node.market.net import AWARDS, jobs_topic
from node.market.store import BidRecord, TaskRow
from node.market.supervision import Supervision
from node.market.tasks import task_estimate_s, workload_for
from p2p.reqresp import RequestError

if TYPE_CHECKING:
    from node.market.requester import JobManager

log = logging.getLogger(__name__)

CONFIRM = "/idlegrid/market/confirm/1"
CANCEL = "/idlegrid/control/cancel/1"


@dataclass(frozen=True)
class Job:
    job_id: bytes
    spec: JobSpec
    inputs: BlobRef | None
    deadline_ms: int
    dataset_bytes: dict[str, int] = field(default_factory=dict)  # by hex id, for demands


@dataclass
class LiveAuction:
    """An auction machine and the effects waiting for the runner to perform."""

    machine: au.Auction
    effects: list[au.Effect] = field(default_factory=list)
    bids: dict[str, BidRecord] = field(default_factory=dict)  # by bidder
    wake: trio.Event = field(default_factory=trio.Event)

    def feed(self, effects: list[au.Effect]) -> None:
        # Only a real effect wakes the runner: waking it for nothing would make it spin
        # (on_tick, feed, wake, on_tick ...) until the window closes.
        if effects:
            self.effects += effects
            self.wake.set()


class TaskRunner:
    def __init__(self, mgr: JobManager, job: Job, idx: int) -> None:
        self.mgr, self.job, self.idx = mgr, job, idx
        self.net, self.store, self.params = mgr.net, mgr.store, mgr.params
        self._missing_since: dict[int, int] = {}  # attempt -> when its worker first lacked

    async def run(self) -> None:
        steps = {
            "queued": self._open,
            "reassigned": self._reopen,
            "bidding": self._auction,
            "awarded": self._supervise,
            "transferring": self._supervise,
            "running": self._supervise,
            "attested": self._collect,
        }
        while True:
            task = await self.store.task(self.job.job_id, self.idx)
            if task.state in TERMINAL or task.state == "verified":
                return
            if self.net.now_ms() >= self.job.deadline_ms and task.state != "attested":
                await self._expire(task)
                continue
            await steps[task.state](task)

    # --- steps ---------------------------------------------------------------------------

    async def _open(self, task: TaskRow) -> None:
        await self._move(task, "open")

    async def _reopen(self, task: TaskRow) -> None:
        runs = [a for a in await self.store.attempts(task.job_id) if a["idx"] == task.idx]
        if len(runs) >= self.params.max_attempts:
            await self._move(
                task, "expire", reason=f"gave up after {len(runs)} workers: {task.reason}"
            )
            return
        await self._move(task, "reopen", attempt=task.attempt + 1)

    async def _auction(self, task: TaskRow) -> None:
        spec, now = self.job.spec, self.net.now_ms()
        demand = self._demand(task.ref, now)
        pool = candidates(self.net.workers(), spec.requirements, spec.max_price_wei_per_s)
        expected = [w for w in pool if w.status == "available"]
        attempts = await self.store.attempts(task.job_id)
        earlier = frozenset(a["worker"] for a in attempts if a["idx"] == task.idx)
        stakes = self.mgr.stakes
        auction = au.Auction(
            demand, frozenset(w.peer_id for w in expected), self.params.confirm_timeout_ms,
            earlier, self._prospects(demand, expected), 0 if stakes is None else stakes.min_wei,
        )  # fmt: skip
        live = LiveAuction(auction)
        self.mgr.auctions[task.ref] = live
        try:
            shard = spec.requirements.gpu_class or ANY_CLASS
            await self.net.publish(jobs_topic(shard), demand)
            self.mgr.messages["demand"] += 1
            outcome = await self._drive(live, task)
        finally:
            del self.mgr.auctions[task.ref]
        await self.store.record_bids(task.ref, list(live.bids.values()))
        if isinstance(outcome, au.Won):
            await self._won(task, outcome)
            return
        why = explain(self.net.workers(), spec.requirements, spec.max_price_wei_per_s)
        if isinstance(outcome, au.NoBids) and outcome.passes:
            why = "every worker passed: " + "; ".join(outcome.passes)
        if isinstance(outcome, au.Unconfirmed):
            why = "no bidder confirmed: " + "; ".join(outcome.reasons)
        log.info("no award", extra={"task": task.ref.text(), "reason": why})
        moved = await self.store.move_task(task, now, attempt=task.attempt + 1, reason=why)
        if moved is not None:
            await self._sleep_ms(
                min(self.params.no_bids_retry_ms, max(0, self.job.deadline_ms - self.net.now_ms()))
            )

    def _prospects(self, demand: Demand, workers: list[Worker]) -> dict[str, au.Prospect]:
        """The best each expected worker could bid, from its presence: the auction closes once
        none still silent could beat the best bid in hand."""
        req, mgr = self.job.spec.requirements, self.mgr
        return {
            w.peer_id: au.prospect(
                demand, min(o.price_wei_per_s for o in offers_for(w, req)), w.presence.score,
                mgr.reputation_of(w.peer_id), mgr.flagged_of(w.peer_id),
            )
            for w in workers
        }  # fmt: skip

    async def _drive(self, live: LiveAuction, task: TaskRow) -> au.Won | au.NoBids | au.Unconfirmed:
        while True:
            while live.effects:
                effect = live.effects.pop(0)
                if isinstance(effect, au.SendOrder):
                    answer = await self._order(task, effect, live)
                    live.feed(live.machine.handle(answer, self.net.now_ms()))
                elif isinstance(effect, au.Won | au.NoBids | au.Unconfirmed):
                    return effect
            deadline = live.machine.next_deadline()
            with trio.move_on_after(self._seconds_until(deadline)):
                await live.wake.wait()
            live.wake = trio.Event()
            live.feed(live.machine.on_tick(self.net.now_ms()))

    async def _order(
        self, task: TaskRow, send: au.SendOrder, live: LiveAuction
    ) -> au.OrderAnswered:
        order = self._task_order(task, send)
        if order.workload.datasets:  # the job's other workers serve its datasets too
            found = await self.store.workers_in(task.job_id, HOLDING, MAX_DATA_HOLDERS + 1)
            peers = [w for w, _state in found if w != send.bidder][:MAX_DATA_HOLDERS]
            holders = await ask_holders(self.net, peers, self.net.seal(order), self._addrs_of)
            order = replace(order, data_holders=holders)
        if order.inputs is not None:
            self.mgr.grant(task.job_id, send.bidder, order.inputs.hash)
        if order.resume is not None and order.resume.blob is not None:
            self.mgr.grant(task.job_id, send.bidder, order.resume.blob.hash)
        await grant_all(self.mgr.share.datasets, order.workload, send.bidder)
        self.mgr.messages["order"] += 1
        try:
            reply = await self.net.request(
                send.bidder,
                send.bid.listen,
                CONFIRM,
                {"order": self.net.seal(order)},
                timeout_s=self.params.confirm_timeout_ms / 1000,
                keep=True,  # a winner is often ordered again soon: skip the stream's setup
            )
        except RequestError as exc:
            return au.OrderAnswered(send.bidder, False, str(exc)[:120])
        accepted = isinstance(reply, dict) and reply.get("accepted") is True
        reason = str(reply.get("reason", ""))[:120] if isinstance(reply, dict) else "bad reply"
        record = live.bids.get(send.bidder)
        if record is not None:
            record.outcome = "won" if accepted else reason
        return au.OrderAnswered(send.bidder, accepted, reason)

    async def _won(self, task: TaskRow, won: au.Won) -> None:
        now, bid = self.net.now_ms(), won.bid
        addrs = json.dumps(list(bid.listen))
        await self.store.open_attempt(
            task.ref,
            won.bidder,
            addrs=addrs,
            price_wei=bid.price_wei_per_s,
            gpus=bid.gpus,
            now_ms=now,
        )
        if await self._move(task, "award", worker=won.bidder, reason="") is None:
            return
        log.info(
            "task awarded",
            extra={
                "task": task.ref.text(),
                "worker": won.bidder,
                "price_wei_per_s": str(bid.price_wei_per_s),
            },
        )
        award = Award(  # stamped now: the writes above may have taken a while
            expires_ms=self.net.now_ms() + self.params.demand_ttl_ms,
            nonce=new_nonce(),
            ref=task.ref,
            worker=won.bidder,
            price_wei_per_s=bid.price_wei_per_s,
        )
        await self.net.publish(AWARDS, award)
        self.mgr.messages["award"] += 1

    async def _supervise(self, task: TaskRow) -> None:
        attempt = await self.store.attempt(task.ref)
        if attempt is None:  # awarded but the attempt row was lost in a crash: re-auction
            await self._move(task, "lost", reason="attempt record missing")
            return
        sup = Supervision(self, task, attempt, await self.store.log_count(task.ref))
        await sup.run()

    async def _collect(self, task: TaskRow) -> None:
        if task.result is None or task.result_hash is None:
            await self._move(task, "reject", reason="attested without a result")
            return
        ref = from_wire(BlobRef, msgpack.unpackb(task.result))
        attempt = await self.store.attempt(task.ref)
        if attempt is not None:
            self.mgr.remember_addrs(attempt["worker"], json.loads(attempt["addrs"]))
        try:
            await self.mgr.share.fetch(ref, self._addrs_of)
        except FetchFailed as exc:
            if attempt is not None and attempt["worker"] in exc.liars:
                await self._refuse_result(task, attempt["worker"], str(exc))
                return
            gone = attempt is not None and attempt["worker"] in exc.missing
            if gone and await self._result_gone(task, str(exc)):
                return
            if self.net.now_ms() >= self.job.deadline_ms:
                await self._move(task, "fail", reason=f"result never fetched: {exc}")
            await self._sleep_ms(self.params.voucher_interval_ms)
            return
        outcome, why = await self._judged(task)
        log.info("verification", extra={"task": task.ref.text(), "outcome": outcome, "reason": why})
        if outcome == "rejected":  # not paid; the task runs again elsewhere
            await self.store.close_attempt(task.ref, 0, why[:300], self.net.now_ms())
            await self._move(task, "reject", reason=why[:300], resume=None)  # its checkpoints too
            return
        vouched = int(attempt["vouched_wei"]) if attempt else 0
        asked = self.job.spec.verification != "none"
        if outcome == "accepted" or (outcome == "unverified" and asked):
            # paid, though no sentry's verdict checked it (accepted: a cross-class miss that
            # no same-class sentry answered): the job's guarantee did not hold, so it says so
            note = (why if outcome == "accepted" else f"unverified: {why}")[:300]
            await self.store.close_attempt(task.ref, vouched, note, self.net.now_ms())
            await self._move(task, "verify", reason=note)
            return
        await self.store.close_attempt(task.ref, vouched, "done", self.net.now_ms())
        await self._move(task, "verify")

    async def _judged(self, task: TaskRow) -> tuple[str, str]:
        """The sentries' outcome for the attempt (:meth:`Verdicts.outcome`), or unverified
        and why when none is asked for."""
        if self.job.spec.verification == "none":
            return "unverified", "the job asked for none"
        if self.mgr.verdicts is None:
            return "unverified", "this node runs no verify service"
        outcome, why = await self.mgr.verdicts.outcome(task.ref, self.mgr.verdict_timeout_ms)
        return str(outcome), str(why)

    async def _result_gone(self, task: TaskRow, error: str) -> bool:
        """The worker says it holds no result it attested (its disk, or it deleted it): once
        it has said so for ``lost_after_ms`` (not a restart that has not granted it yet), the
        task runs elsewhere from the last checkpoint we hold, and the worker is paid up to
        that checkpoint, as after a failover. True when the task moved."""
        now = self.net.now_ms()
        since = self._missing_since.setdefault(task.attempt, now)
        if now - since < self.params.lost_after_ms:
            return False
        held = [c["seconds"] for c in await self.store.checkpoints(task.job_id)
                if (c["idx"], c["attempt"], c["held"]) == (task.idx, task.attempt, 1)]  # fmt: skip
        why = f"result gone: the worker no longer holds it ({error})"[:300]
        log.warning("result gone, failing over", extra={"task": task.ref.text(), "error": error})
        await self._end_attempt(task, why, checkpoint_s=max(held, default=0))
        await self._move(task, "reject", reason=why)
        return True

    async def _refuse_result(self, task: TaskRow, worker: str, error: str) -> None:
        """The worker served bytes that are not the result it attested: nothing usable was
        delivered, so it is not paid (the anchorers hear a cap of 0), it may not bid on this
        task again, and the task runs elsewhere from scratch (its checkpoints came from the
        same liar)."""
        why = f"served a corrupt result: {error}"[:300]
        log.warning(
            "result refused", extra={"task": task.ref.text(), "worker": worker, "error": error}
        )
        self.mgr.refuse(task.ref, worker)
        await self.store.close_attempt(task.ref, 0, why, self.net.now_ms())
        await self._move(task, "reject", reason=why, resume=None)

    async def _expire(self, task: TaskRow) -> None:
        event: TaskEvent = "expire" if task.state in ("bidding", "reassigned") else "fail"
        if task.state in ("awarded", "transferring", "running"):
            await self._end_attempt(task, "deadline passed")
        await self._move(task, event, reason=task.reason or "deadline passed")

    # --- helpers -------------------------------------------------------------------------

    async def _move(self, task: TaskRow, event: TaskEvent, **values: Any) -> TaskRow | None:
        moved = await self.store.move_task(
            task,
            self.net.now_ms(),
            state=advance(task.state, event),
            **values,
        )
        if moved is not None:
            await self.mgr.task_moved(task.job_id, moved)
        return moved

    async def _end_attempt(self, task: TaskRow, why: str, checkpoint_s: int | None = None) -> None:
        """Closes the attempt: paid in full, or up to ``checkpoint_s`` after a failover."""
        attempt = await self.store.attempt(task.ref)
        if attempt is None:
            return
        vouched = int(attempt["vouched_wei"])
        rate = int(attempt["price_wei"]) * attempt["gpus"]
        payable = (
            vouched if checkpoint_s is None else payable_after_failover(rate, checkpoint_s, vouched)
        )
        await self.store.close_attempt(task.ref, payable, why, self.net.now_ms())
        # Best effort: a worker that is gone stops by itself once vouchers stop.
        with trio.move_on_after(2), contextlib.suppress(RequestError):
            await self.net.request(
                attempt["worker"],
                json.loads(attempt["addrs"]),
                CANCEL,
                {"ref": to_wire(task.ref)},
                timeout_s=2,
            )

    def _demand(self, ref: TaskRef, now: int) -> Demand:
        spec = self.job.spec
        return Demand(
            expires_ms=now + self.params.demand_ttl_ms,
            nonce=new_nonce(),
            ref=ref,
            kind=spec.kind,
            requirements=spec.requirements,
            max_price_wei_per_s=Wei(spec.max_price_wei_per_s),
            budget_wei=Wei(spec.task_budget_wei()),
            estimate_s=task_estimate_s(spec),
            deadline_ms=self.job.deadline_ms,
            bid_until_ms=now + self.params.bid_window_ms,
            verification=spec.verification,
            network=spec.network,
            reply_to=self.net.addrs(),
            datasets=self.job.dataset_bytes,
            inputs_bytes=0 if self.job.inputs is None else self.job.inputs.size,
            settles=self.mgr.escrow is not None,
        )

    def _task_order(self, task: TaskRow, send: au.SendOrder) -> TaskOrder:
        resume = None
        if task.resume is not None:
            resume = from_wire(Checkpoint, msgpack.unpackb(task.resume))
        now, spec = self.net.now_ms(), self.job.spec
        return TaskOrder(
            expires_ms=now + self.params.demand_ttl_ms,
            nonce=new_nonce(),
            ref=task.ref,
            worker=send.bidder,
            price_wei_per_s=send.bid.price_wei_per_s,
            gpus=send.bid.gpus,
            budget_wei=Wei(spec.task_budget_wei()),
            deadline_ms=self.job.deadline_ms,
            workload=workload_for(spec, task.idx),
            inputs=self.job.inputs,
            resume=resume,
            voucher_interval_ms=self.params.voucher_interval_ms,
            # A worker we stop hearing is replaced after lost_after_ms; its copy must stop by
            # then too, or two workers compute the task and one of them is never paid.
            voucher_grace_ms=min(self.params.voucher_grace_ms, self.params.lost_after_ms),
            requester_address="" if self.mgr.escrow is None else self.mgr.escrow.chain.address,
            verification=spec.verification,
        )

    def _addrs_of(self, peer: str) -> list[str]:
        return self.mgr.addrs_of(peer)

    def _seconds_until(self, deadline_ms: int | None) -> float:
        return 3600.0 if deadline_ms is None else max(0.0, (deadline_ms - self.net.now_ms()) / 1000)

    async def _sleep_ms(self, ms: int) -> None:
        await trio.sleep(max(0, ms) / 1000)
