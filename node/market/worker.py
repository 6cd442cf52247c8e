"""The worker's market service: bid on demands, accept orders, run tasks, report, get paid.

Started as the ``market`` service of the worker role. Demands arrive on ``jobs/<our class>``
and ``jobs/any``; the :class:`~consensus.market.bidder.Bidder` decides, and a bid goes
straight to the requester. An accepted order becomes a row in ``work`` and a run of the
executor; every voucher the requester sends is checked by the task's
:class:`~consensus.market.meter.MeterGuard` and answered with a :class:`TaskReport`. When
vouchers stop, the work pauses (its processes frozen), so the worker's unpaid exposure is a
few seconds; vouchers back within ``voucher_hold_ms`` (a requester that restarted) resume it,
else it stops.

After a restart, work that was running in the previous process is reported ``lost`` (its
process died with the daemon), so the requester moves it elsewhere at once; finished work
keeps serving its result.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import Wei, from_wire, to_wire
from consensus.market import bidder as bd
from consensus.market.messages import (
    ANY_CLASS,
    Award,
    Bid,
    BlobRef,
    Checkpoint,
    Demand,
    TaskOrder,
    TaskRef,
    TaskReport,
    Voucher,
)
from consensus.market.meter import MeterGuard, Pause, Resume, Stop
from node.market.blobshare import BlobShare, FetchFailed
from node.market.data_sharing import MAX_LENT, SHARE_DATA, Held, lend_to
from node.market.datasets import Disk, NoRoom, disk_room, disk_status, place_all, using_all
from node.market.executor import GENESIS, SWEEP_MS, Executor, Freezer, RunSpec, SegmentDone
from node.market.net import AWARDS, MarketNet, jobs_topic
from node.market.packing import PackError, pack_outputs, unpack
from node.market.params import MarketParams
from node.market.requester import BID
from node.market.store import MarketStore
from node.market.supervision import METER
from node.market.task_folders import sweep_task_folders, task_folder
from node.market.task_runner import CANCEL, CONFIRM
from p2p.reqresp import RemoteError, RequestError, RequestRejected
from storage.transfer_files import discard_tree

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.payee import Payee

log = logging.getLogger(__name__)

MAX_LOG_LINES = 2000  # kept per task for the requester to read; older lines are dropped
DECISIONS_KEPT = 50
ENDED = ("done", "failed", "stopped", "cancelled", "lost")
# An ended task's report (last logs, checkpoints) stays in memory this long, then sqlite's
# answers. The requester reads it at its next poll (every voucher interval, 60 s at most) or,
# cut off, keeps asking for lost_after_ms (10 min at most); a restarted requester is waited
# for voucher_hold_ms, so that is kept when longer.
ENDED_KEEP_MS = 15 * 60_000
# Requesters whose demands' reply addresses are kept, the longest unheard first to go (any
# peer may publish demands). The order a fetch follows comes over a connection to the
# requester, and a holder forgotten is dialed at the addresses it announced (the peer book).
ADDRS_KEPT = 4096
# A task's files (checkpoints, result) stay granted to its requester this long after it can
# last have learnt of them or taken the result: a requester fetches the checkpoints a report
# listed for up to lost_after_ms (10 min at most) after reading it, and asks again every
# voucher interval (60 s at most) for a result key whose answer it lost.
GRANTS_KEEP_MS = ENDED_KEEP_MS
# Done tasks whose requester has not taken the result yet (it fetches it until it has it,
# after its job's deadline too); past this many, the oldest's grants go (a requester that
# never collects, or results from before a restart that were collected long ago).
UNCOLLECTED_KEPT = 4096


@dataclass
class Work:
    """A task this worker runs, in memory while this process lives."""

    order: TaskOrder
    requester: str
    guard: MeterGuard
    state: str = "fetching"
    persisted: str = "fetching"  # the state in sqlite
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    freezer: Freezer = field(default_factory=Freezer)  # paused while no voucher comes
    checkpoints: list[Checkpoint] = field(default_factory=list)
    # each segment's inner point hashes (a runtime with points), for the attestation
    points: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    logs_dropped: int = 0
    result: BlobRef | None = None
    result_hash: bytes | None = None
    error: str = ""
    ended_ms: int | None = None  # when its end was in sqlite: kept ENDED_KEEP_MS from then

    def paused(self) -> bool:
        return self.freezer.frozen and self.state not in ENDED

    def log(self, line: str) -> None:
        if len(self.logs) == self.logs.maxlen:
            self.logs_dropped += 1
        self.logs.append(line)

    def report(self, since: int, log_offset: int) -> TaskReport:
        start = max(0, log_offset - self.logs_dropped)
        return TaskReport(
            ref=self.order.ref,
            state=self.state,
            segments=self.order.workload.segments,
            checkpoints=[c for c in self.checkpoints if c.index >= since],
            log=list(self.logs)[start:],
            log_offset=self.logs_dropped + start,
            result=self.result,
            result_hash=self.result_hash,
            error=self.error,
        )


class WorkerService:
    def __init__(
        self,
        net: MarketNet,
        store: MarketStore,
        share: BlobShare,
        *,
        bidder: bd.Bidder,
        executor: Executor,
        work_root: Path,
        params: MarketParams | None = None,
        disk: Disk | None = None,
    ) -> None:
        self.net, self.store, self.share, self.bidder = net, store, share, bidder
        self.executor, self.work_root, self.params = executor, work_root, params or MarketParams()
        self.disk = disk or Disk(work_root)
        self.share_data = True  # worker.share_task_data: serve a job's data to its workers
        # requester -> (worker, dataset) -> times lent for it (data_sharing), while any task
        # of its is held here; then they are taken back. The limit is on distinct pairs: a
        # count of every ask shut sharing off for good once a long job had asked MAX_LENT times
        self._lent: dict[str, Counter[tuple[str, bytes]]] = {}
        self._released: list[Counter[tuple[str, bytes]]] = []  # to take back (tick loop)
        self.works: dict[TaskRef, Work] = {}  # running, and ended within ENDED_KEEP_MS
        # Done tasks' datasets forgotten with their works, still shared (data_sharing) until
        # their job's deadline: past it the requester orders no more of the job's tasks.
        self._done_data: dict[Held, int] = {}
        self.decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
        self._addrs: OrderedDict[str, list[str]] = OrderedDict()
        # Grants to requesters still needed: result hash -> (requester, the task's files) of
        # done tasks until the requester takes the result; then, as for any other ended task,
        # (when, requester, files) to take back in time order.
        self._uncollected: OrderedDict[bytes, tuple[str, list[bytes]]] = OrderedDict()
        self._revoking: deque[tuple[int, str, list[bytes]]] = deque()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._last_presence = self.presence()
        self.presence_changed: Callable[[], None] = lambda: None
        self.payee: Payee | None = None  # with chain.settle: checks and keeps chain vouchers
        # with chain.settle: where we are paid, and our wallet's binding of it to our peer id
        self.chain_address, self.binding_sig = "", b""
        self._stake_refusals: set[str] = set()  # requesters that refused us for stake
        # Proof-of-compute attests a finished task here (node.verify.service wires it).
        self.on_done: Callable[[Work], Awaitable[None]] | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.share.key_served = self._key_served
        await self._after_restart()
        self.net.serve(CONFIRM, self._on_order)
        self.net.serve(METER, self._on_meter)
        self.net.serve(CANCEL, self._on_cancel)
        self.net.serve(SHARE_DATA, self._on_share_data)
        kinds = frozenset({Demand.KIND})
        classes = {self.bidder.caps.gpu_class, ANY_CLASS}
        inboxes = [await self.net.subscribe(jobs_topic(c), kinds) for c in sorted(classes)]
        awards = await self.net.subscribe(AWARDS, frozenset({Award.KIND}))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for inbox in inboxes:
                nursery.start_soon(self._follow_demands, inbox)
            nursery.start_soon(self._follow_awards, awards)
            nursery.start_soon(self._tick_loop)
            task_status.started()

    def presence(self) -> tuple[str, int]:
        """What our presence says: available, busy or unavailable, and the free GPUs."""
        return self.bidder.status(), max(0, self.bidder.free_gpus())

    def owner_activity(self, busy: bool) -> None:
        """The owner started (or stopped) using the GPUs: idle-only workers stop bidding."""
        self.bidder.handle(bd.OwnerActivity(busy), self.net.now_ms())
        self._wake()

    async def status(self) -> dict[str, Any]:
        return {
            "status": self.bidder.status(),
            "free_gpus": self.bidder.free_gpus(),
            "running": [r.text() for r in self.bidder.running()],
            "paused": [ref.text() for ref, work in self.works.items() if work.paused()],
            "decisions": list(self.decisions),
            "disk": await disk_status(self.share.datasets, self.disk),
        }

    # --- bidding -------------------------------------------------------------------------

    async def _follow_demands(self, inbox: Any) -> None:
        async for msg in inbox:
            demand = msg.opened.body
            if not isinstance(demand, Demand) or msg.origin == self.net.peer_id:
                continue
            self._remember_addrs(msg.origin, demand.reply_to)
            room = await disk_room(self.share.datasets, demand, self.disk)
            seen = bd.DemandSeen(demand, msg.origin, *room)
            for effect in self.bidder.handle(seen, self.net.now_ms()):
                self._decided(demand.ref, effect)
                assert self._nursery is not None
                if isinstance(effect, bd.SendBid):
                    self._nursery.start_soon(self._send_bid, effect)
                elif isinstance(effect, bd.NoBid) and effect.tell:
                    self._nursery.start_soon(self._send_pass, msg.origin, demand, effect.reason)
            self._wake()

    def _decided(self, ref: TaskRef, effect: bd.Effect) -> None:
        why = effect.reason if isinstance(effect, bd.NoBid) else "bid"
        self.decisions.append({"task": ref.text(), "at_ms": self.net.now_ms(), "decision": why})
        log.debug("demand", extra={"task": ref.text(), "decision": why})

    async def _send_bid(self, send: bd.SendBid) -> None:
        caps, now = self.bidder.caps, self.net.now_ms()
        bid = Bid(
            expires_ms=now + self.params.demand_ttl_ms,
            nonce=new_nonce(),
            ref=send.ref,
            price_wei_per_s=Wei(send.price_wei_per_s),
            gpus=send.gpus,
            gpu_class=caps.gpu_class,
            est_seconds=send.est_seconds,
            score=caps.score,
            region=caps.region,
            listen=self.net.addrs(),
            chain_address=self.chain_address,
            binding_sig=self.binding_sig,
        )
        try:
            await self.net.request(
                send.requester,
                send.reply_to,
                BID,
                {"bid": self.net.seal(bid)},
                timeout_s=self.params.bid_window_ms / 1000 + 2,
                keep=True,  # the auction may close on this bid: skip the stream's setup
            )
        except RemoteError as exc:
            self._log_refusal(send, exc.message)
            self.bidder.handle(bd.BidRefused(send.ref), self.net.now_ms())
        except RequestError as exc:
            log.info("bid not delivered", extra={"task": send.ref.text(), "error": str(exc)})
            self.bidder.handle(bd.BidRefused(send.ref), self.net.now_ms())
        self._wake()

    def _log_refusal(self, send: bd.SendBid, reason: str) -> None:
        """A refusal for stake is the operator's to mend, so it is said once per requester
        above debug; any other refusal is one auction's business."""
        if not reason.startswith("stake ") or send.requester in self._stake_refusals:
            log.debug("bid refused", extra={"task": send.ref.text(), "reason": reason})
            return
        if len(self._stake_refusals) < 4096:
            self._stake_refusals.add(send.requester)
        log.warning("bid refused for stake: stake with `idlegrid wallet stake`",
                    extra={"requester": send.requester, "reason": reason})  # fmt: skip

    async def _send_pass(self, requester: str, demand: Demand, reason: str) -> None:
        """Tells the requester we will not bid, so its auction need not wait for us."""
        payload = {"pass": to_wire(demand.ref), "reason": reason[:200]}
        with contextlib.suppress(RequestError):
            await self.net.request(requester, demand.reply_to, BID, payload, timeout_s=2, keep=True)

    async def _follow_awards(self, inbox: Any) -> None:
        async for msg in inbox:
            if isinstance(msg.opened.body, Award):
                self.bidder.handle(bd.AwardSeen(msg.opened.body, msg.origin), self.net.now_ms())
                self._wake()

    # --- orders and runs -----------------------------------------------------------------

    async def _on_order(self, peer: str, payload: Any) -> Any:
        order = self._open(payload, "order", peer, TaskOrder)
        if order.worker != self.net.peer_id:
            raise RequestRejected("invalid", "the order names another worker")
        [effect] = self.bidder.handle(bd.OrderReceived(order, peer), self.net.now_ms())
        self._wake()
        if isinstance(effect, bd.Decline):
            return {"accepted": False, "reason": effect.reason}
        raw = payload["order"]
        if await self.store.insert_work(order.ref, peer, raw, self.net.now_ms()):
            self._start(order, peer)
        return {"accepted": True}

    def _start(self, order: TaskOrder, requester: str) -> None:
        rate = order.price_wei_per_s * order.gpus
        guard = MeterGuard(
            rate,
            order.budget_wei,
            self.net.now_ms(),
            order.voucher_interval_ms,
            order.voucher_grace_ms,
            hold_ms=self.params.voucher_hold_ms,
        )
        work = Work(order, requester, guard)
        self.works[order.ref] = work
        assert self._nursery is not None
        self._nursery.start_soon(self._run_work, work)
        log.info("task accepted", extra={"task": order.ref.text(), "requester": requester})

    async def _run_work(self, work: Work) -> None:
        ref = work.order.ref
        workdir = task_folder(self.work_root, ref)
        # Its datasets stay while it runs, then (marked used) for the sentries that check it.
        async with using_all(self.share.datasets, work.order.workload):
            try:
                with work.scope:  # cancelled by _stop, which sets the state and the reason
                    await self._execute(work, workdir)
            except FetchFailed as exc:  # not the workload's fault: the requester moves the task
                work.state, work.error = "stopped", str(exc)
            except PackError as exc:
                work.state, work.error = "failed", f"bad inputs: {exc}"
            except OSError as exc:  # ours (a full disk, a missing tool): it moves, we go on
                work.state, work.error = "stopped", _our_error(exc)
                log.warning("task stopped", extra={"task": ref.text(), "error": work.error})
            finally:
                with trio.CancelScope(shield=True):
                    await self._finish(work, workdir)

    async def _execute(self, work: Work, workdir: Path) -> None:
        order = work.order
        workdir.mkdir(parents=True, exist_ok=True)
        resume_path = None
        if order.inputs is not None:
            archive = await self.share.fetch(order.inputs, self._addrs_of)
            await trio.to_thread.run_sync(unpack, archive, workdir)
        holders = [work.requester, *order.data_holders]  # the first is dialled if need be
        await place_all(self.share.datasets, order.workload, workdir, holders)
        if order.resume is not None and order.resume.blob is not None:
            resume_path = await self.share.fetch(order.resume.blob, self._addrs_of)
        await self._set_state(work, "running")
        spec = RunSpec(
            order.ref.text(),
            order.workload,
            workdir,
            resume_path,
            order.resume.index if order.resume else -1,
            order.resume.chained if order.resume else GENESIS,
            gpus=order.gpus,
            freezer=work.freezer,
        )

        async def on_segment(done: SegmentDone) -> None:
            blob = await self.share.put(done.checkpoint)
            self.share.grant(work.requester, blob.hash)
            work.points[done.index] = done.points
            work.checkpoints.append(
                Checkpoint(
                    index=done.index,
                    hash=done.hash,
                    chained=done.chained,
                    seconds=done.seconds,
                    blob=blob,
                )
            )

        result = await self.executor.run(spec, on_segment, work.log)
        if not result.ok:
            work.state, work.error = "failed", result.error
            return
        archive = workdir.parent / f"{workdir.name}.out.tar"
        await trio.to_thread.run_sync(pack_outputs, workdir, order.workload.outputs, archive)
        work.result = await self.share.put(archive)
        archive.unlink(missing_ok=True)
        self.share.grant(work.requester, work.result.hash)
        self._await_collection(work.requester, work.result.hash, _granted(work))
        work.result_hash = result.result_hash
        if self.on_done is not None:
            await self.on_done(work)
        work.state = "done"

    async def _finish(self, work: Work, workdir: Path) -> None:
        ref = work.order.ref
        result = None if work.result is None else msgpack.packb(to_wire(work.result))
        await self.store.move_work(
            ref,
            work.persisted,
            self.net.now_ms(),
            state=work.state,
            result=result,
            result_hash=work.result_hash,
            error=work.error,
        )
        work.persisted = work.state
        work.ended_ms = self.net.now_ms()
        if self.payee is not None and work.order.requester_address:
            await self.payee.ended(ref)  # hands the latest chain voucher to the anchorers
        self.bidder.handle(bd.TaskEnded(ref), self.net.now_ms())
        self._wake()
        await discard_tree(workdir)
        log.info("task ended", extra={"task": ref.text(), "state": work.state, "error": work.error})

    async def _set_state(self, work: Work, state: str) -> None:
        await self.store.move_work(work.order.ref, work.persisted, self.net.now_ms(), state=state)
        work.state = work.persisted = state

    # --- metering and control ------------------------------------------------------------

    async def _on_meter(self, peer: str, payload: Any) -> Any:
        voucher = self._open(payload, "voucher", peer, Voucher)
        since, offset = payload.get("since", 0), payload.get("log_offset", 0)
        if not (isinstance(since, int) and isinstance(offset, int)):
            raise RequestRejected("malformed", "since and log_offset must be integers")
        work = self.works.get(voucher.ref)
        if work is None or work.requester != peer:
            return to_wire(await self._report_from_db(voucher.ref, peer))
        if voucher.worker != self.net.peer_id:
            raise RequestRejected("invalid", "the voucher names another worker")
        if not await self._chain_voucher_ok(work, voucher):
            return to_wire(work.report(since, offset))  # as if it never came: the grace runs
        if work.state not in ENDED:
            self._follow(work, work.guard.on_voucher(voucher.amount_wei, self.net.now_ms()))
            self._wake()
        await self.store.move_work(
            voucher.ref,
            work.persisted,
            self.net.now_ms(),
            voucher=payload["voucher"],
            vouched_wei=str(voucher.amount_wei),
        )
        return to_wire(work.report(since, offset))

    async def _chain_voucher_ok(self, work: Work, voucher: Voucher) -> bool:
        """With chain settlement, a voucher counts only with its valid EIP-712 twin and the
        requester's spend covering it (both kept)."""
        requester = work.order.requester_address
        if self.payee is None or not requester:
            return True
        try:
            spend = self.payee.check(voucher, requester)
        except Invalid as exc:
            log.warning("voucher without a valid chain signature",
                        extra={"task": voucher.ref.text(), "error": str(exc)})  # fmt: skip
            return False
        assert voucher.chain_sig is not None
        await self.payee.keep(voucher.ref, requester, voucher.amount_wei, voucher.chain_sig, spend,
                              peer=work.requester)  # fmt: skip
        if work.state in ENDED:  # the last voucher comes with the final report: pass it on
            await self.payee.ended(voucher.ref)
        return True

    def block_requesters(self, reasons: dict[str, str]) -> None:
        """Declines the work of these requesters (peer ids or lower-case chain addresses) from
        now on, and stops their running tasks: the payee found them in arrears
        (``node/chain/arrears.py``), so more work for them would only add to what waits."""
        self.bidder.handle(bd.Blocked(reasons), self.net.now_ms())
        for work in self.works.values():
            address = work.order.requester_address.lower()
            why = reasons.get(work.requester) or (reasons.get(address, "") if address else "")
            if why and work.state not in ENDED:
                self._stop(work, why)
        self._wake()

    async def _on_cancel(self, peer: str, payload: Any) -> Any:
        try:
            ref = from_wire(TaskRef, payload.get("ref") if isinstance(payload, dict) else None)
        except Invalid as exc:
            raise RequestRejected("malformed", str(exc)) from None
        work = self.works.get(ref)
        if work is None and await self._ended_in_db(ref, peer):
            return {"ok": True}  # as while it was in memory: it ended, nothing to cancel
        if work is None or work.requester != peer:
            raise RequestRejected("not_found", "no such task of yours")
        if work.state not in ENDED:
            self._stop(work, "cancelled by the requester", state="cancelled")
        return {"ok": True}

    async def _on_share_data(self, peer: str, payload: Any) -> Any:
        """A requester shows us its order for another worker and asks us to serve that
        worker the job's datasets (:mod:`node.market.data_sharing` says when we agree)."""
        if not self.share_data:
            raise RequestRejected("refused", "this worker does not share task data")
        order = self._open(payload, "order", peer, TaskOrder)
        lent = self._lent.get(peer, Counter())
        asked = {(order.worker, d) for d in order.workload.datasets.values()}
        if len(lent.keys() | asked) > MAX_LENT:
            raise RequestRejected("limit", f"{MAX_LENT} grants lent for you here already")
        held = [_held(w) for w in self.works.values()] + list(self._done_data)  # pruned by tick
        ids = await lend_to(self.share.datasets, held, peer, order)
        self._lent.setdefault(peer, lent).update((order.worker, d) for d in ids)
        log.info("task data shared", extra={"requester": peer, "to": order.worker,
                                            "datasets": len(ids)})  # fmt: skip
        return {"ok": True}

    def _follow(self, work: Work, effect: Stop | Pause | Resume | None) -> None:
        """Does what the task's meter guard decided."""
        if isinstance(effect, Stop):
            self._stop(work, effect.reason)
        elif isinstance(effect, Pause):  # its processes keep their work, computing nothing
            why = effect.reason
            log.warning("task paused", extra={"task": work.order.ref.text(), "reason": why})
            work.freezer.freeze()
        elif isinstance(effect, Resume):
            log.info("task resumed", extra={"task": work.order.ref.text()})
            work.freezer.thaw()

    def _stop(self, work: Work, reason: str, state: str = "stopped") -> None:
        log.info("stopping task", extra={"task": work.order.ref.text(), "reason": reason})
        work.state, work.error = state, reason
        work.scope.cancel()

    async def _tick_loop(self) -> None:
        while True:
            now = self.net.now_ms()
            self.bidder.on_tick(now)
            next_prune = self._prune(now)
            await self._take_back()
            deadlines = [d for d in [self.bidder.next_deadline(), next_prune] if d is not None]
            for work in self.works.values():
                if work.state in ENDED:
                    continue
                self._follow(work, work.guard.on_tick(now))
                if work.state in ENDED:
                    continue
                deadlines.append(work.guard.next_deadline())
                if work.freezer.frozen:  # what the paused task started since is stopped too
                    work.freezer.sweep()
                    deadlines.append(now + SWEEP_MS)
            wait = (min(deadlines) - now) / 1000 if deadlines else 3600.0
            with trio.move_on_after(max(0.0, wait)):
                await self._changed.wait()
            self._changed = trio.Event()

    def _prune(self, now: int) -> int | None:
        """Forgets ended works past their retention (a later poll gets sqlite's report) and
        done jobs' data past the job's deadline; returns when the next one goes."""
        keep = max(ENDED_KEEP_MS, self.params.voucher_hold_ms)
        for ref, work in list(self.works.items()):
            if work.ended_ms is not None and now >= work.ended_ms + keep:
                del self.works[ref]
                self._keep_shared(work)
                self._release_grants(work, now)
        while self._revoking and self._revoking[0][0] <= now:
            _, requester, digests = self._revoking.popleft()
            for digest in digests:
                self.share.revoke(requester, digest)
        self._done_data = {h: until for h, until in self._done_data.items() if until > now}
        holding = {w.requester for w in self.works.values()}
        holding.update(h.requester for h in self._done_data)
        for requester in [r for r in self._lent if r not in holding]:
            self._released.append(self._lent.pop(requester))
        ends = [w.ended_ms + keep for w in self.works.values() if w.ended_ms is not None]
        ends += [self._revoking[0][0]] if self._revoking else []
        return min([*ends, *self._done_data.values()], default=None)

    def _release_grants(self, work: Work, now: int) -> None:
        """Schedules taking back what a forgotten task granted its requester: a done task's
        files once the requester has taken the result (it fetched every checkpoint it
        wanted before it asked for the result), any other's now (no later report lists its
        checkpoints)."""
        if work.state == "done" and work.result is not None:
            return  # taken back once the result is taken (_key_served), or already scheduled
        if work.result is not None:  # granted, yet the task did not end done: never asked
            self._uncollected.pop(work.result.hash, None)
        self._revoke_later(now, work.requester, _granted(work))

    def _await_collection(self, requester: str, result: bytes, digests: list[bytes]) -> None:
        """Keeps a done task's files granted until its requester takes the result."""
        self._uncollected[result] = (requester, digests)
        while len(self._uncollected) > UNCOLLECTED_KEPT:
            _, (peer, oldest) = self._uncollected.popitem(last=False)
            for digest in oldest:
                self.share.revoke(peer, digest)

    def _key_served(self, peer: str, digest: bytes) -> None:
        """The requester took a result's key, the last step of its fetch: it holds the
        result, and asks for none of the task's files again but for a key reply it lost."""
        waiting = self._uncollected.get(digest)
        if waiting is None or waiting[0] != peer:
            return
        del self._uncollected[digest]
        self._revoke_later(self.net.now_ms(), *waiting)
        self._wake()

    def _revoke_later(self, now: int, requester: str, digests: list[bytes]) -> None:
        self._revoking.append((now + GRANTS_KEEP_MS, requester, digests))

    async def _take_back(self) -> None:
        """Takes back what was lent for requesters none of whose tasks is held here now."""
        while self._released and self.share.datasets is not None:
            for (worker, dataset_id), times in self._released.pop().items():
                for _ in range(times):
                    await self.share.datasets.unlend(worker, dataset_id)

    def _keep_shared(self, work: Work) -> None:
        """Keeps what data sharing needs of a done task that memory forgets: one entry per
        job and datasets, however many of its tasks ran here."""
        if work.state == "done" and work.order.workload.datasets:
            held = _held(work)
            self._done_data[held] = max(work.order.deadline_ms, self._done_data.get(held, 0))

    # --- restart and helpers -------------------------------------------------------------

    async def _after_restart(self) -> None:
        swept = await trio.to_thread.run_sync(sweep_task_folders, self.work_root)
        if swept:
            log.info("stale task folders deleted", extra={"folders": swept})
        now = self.net.now_ms()
        for row in await self.store.works(["fetching", "running"]):
            ref = TaskRef(job_id=row["job_id"], task=row["idx"], attempt=row["attempt"])
            await self.store.move_work(
                ref, row["state"], now, state="lost", error="the worker restarted mid-task"
            )
            if self.payee is not None:  # the seconds it was vouched before the crash count
                await self.payee.ended(ref)
        for row in await self.store.works(["done"]):
            if row["result"] is not None:
                result = from_wire(BlobRef, msgpack.unpackb(row["result"]))
                self.share.grant(row["requester"], result.hash)
                self._await_collection(row["requester"], result.hash, [result.hash])

    async def _report_from_db(self, ref: TaskRef, peer: str) -> TaskReport:
        row = await self.store.work(ref)
        if row is None or row["requester"] != peer:
            return TaskReport(ref=ref, state="lost", segments=0, error="no such task here")
        result = (
            None if row["result"] is None else from_wire(BlobRef, msgpack.unpackb(row["result"]))
        )
        return TaskReport(
            ref=ref,
            state=row["state"],
            segments=0,
            result=result,
            result_hash=row["result_hash"],
            error=row["error"],
        )

    async def _ended_in_db(self, ref: TaskRef, peer: str) -> bool:
        """Whether ``peer``'s task ``ref`` is in sqlite only: ended (forgotten from memory
        after its retention, or run by an earlier process)."""
        row = await self.store.work(ref)
        return row is not None and row["requester"] == peer and row["state"] in ENDED

    def _open(self, payload: Any, key: str, peer: str, kind: type[Any]) -> Any:
        raw = payload.get(key) if isinstance(payload, dict) else None
        try:
            opened = self.net.open(raw, peer)
        except Invalid as exc:
            raise RequestRejected("invalid", str(exc)) from None
        if not isinstance(opened.body, kind):
            raise RequestRejected("invalid", f"expected {kind.__name__}, got {opened.kind}")
        return opened.body

    def _addrs_of(self, peer: str) -> list[str]:
        return self._addrs.get(peer, [])

    def _remember_addrs(self, peer: str, addrs: list[str]) -> None:
        self._addrs[peer] = list(addrs)
        self._addrs.move_to_end(peer)
        while len(self._addrs) > ADDRS_KEPT:
            self._addrs.popitem(last=False)

    def _wake(self) -> None:
        self._changed.set()
        if (now := self.presence()) != self._last_presence:
            self._last_presence = now
            self.presence_changed()


def _granted(work: Work) -> list[bytes]:
    """The files of a task granted to its requester: checkpoints, then the result."""
    files = [c.blob.hash for c in work.checkpoints if c.blob is not None]
    return files + ([work.result.hash] if work.result is not None else [])


def _held(work: Work) -> Held:
    """What data sharing is told of a task here."""
    datasets = frozenset(work.order.workload.datasets.values())
    return Held(work.requester, work.order.ref.job_id, datasets, work.state)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _our_error(exc: OSError) -> str:
    """How a task stopped by our own OSError is reported: the disk, or just ours."""
    if isinstance(exc, NoRoom) or exc.errno in DISK_FULL:
        return f"this worker's disk: {exc}"
    return f"this worker: {exc}"
