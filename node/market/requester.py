"""The requester's job manager: submit jobs, run one task runner per live task, answer bids.

Started as the ``market`` service of the requester role. A submitted job is packed (inputs),
written to sqlite with its tasks, and each task gets a :class:`TaskRunner`; after a restart,
every task not yet finished gets one again, so nothing submitted is lost or done twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.market import auction as au
from consensus.market.lifecycle import TERMINAL, job_state
from consensus.market.messages import JOB_ID_LEN, Bid, BlobRef, TaskRef
from consensus.market.spec import JobSpec
from node.market.blobshare import BlobShare
from node.market.datasets import check_spec, dataset_sizes
from node.market.net import MarketNet
from node.market.packing import pack
from node.market.params import MarketParams
from node.market.store import BidRecord, MarketStore, TaskRow
from node.market.task_runner import Job, LiveAuction, TaskRunner
from p2p.reqresp import RequestRejected

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.escrow import Escrow
    from node.chain.stakes import Stakes

log = logging.getLogger(__name__)

BID = "/idlegrid/market/bid/1"
# Workers whose addresses are kept, the longest unheard first to go: well above the workers
# one requester deals with at a time; a forgotten one is dialed at the addresses its
# announcements gave (the peer book), if not connected.
ADDRS_KEPT = 4096


class JobManager:
    def __init__(
        self,
        net: MarketNet,
        store: MarketStore,
        share: BlobShare,
        scratch: Path,
        params: MarketParams | None = None,
    ) -> None:
        self.net, self.store, self.share, self.scratch = net, store, share, scratch
        self.params = params or MarketParams()
        self.auctions: dict[TaskRef, LiveAuction] = {}
        self._peer_addrs: OrderedDict[str, list[str]] = OrderedDict()
        self._runners: dict[tuple[bytes, int], trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self.escrow: Escrow | None = None  # with chain.settle: escrow per job, signed vouchers
        self.stakes: Stakes | None = None  # with chain.settle: bidders' stake, if asked
        # Market messages by kind, sent and received: what an auction costs the network.
        self.messages: Counter[str] = Counter()
        # Proof-of-compute (node.verify.service sets these): verdicts awaited in _collect.
        self.verdicts: Any = None
        # Set by the requester's verify service once it judges (its exclusions loaded): a task
        # runner waits for it, so no auction or result is handled before (node.market.service
        # creates it; None where no verify service runs, as in some tests).
        self.verify_ready: trio.Event | None = None
        self.verdict_timeout_ms = 120_000
        self.reputation_of: Callable[[str], int] = lambda _peer: au.NEUTRAL_REPUTATION
        self.excluded: Callable[[TaskRef, str], bool] = lambda _ref, _peer: False
        # Sentries' QoS flags (node.verify.qos_view): the measured score of a flagged worker.
        self.flagged_of: Callable[[str], int | None] = lambda _peer: None
        # Workers that served a corrupt result of a task, kept from bidding on it again (in
        # memory: after a restart such a worker may win once more and be caught once more),
        # while the task's runner runs: only it opens an auction for the task.
        self._refused: dict[tuple[bytes, int], set[str]] = {}
        # The blobs (inputs, resume points) each job's orders granted to workers, taken back
        # once none of its tasks has a runner, not only when file expiry deletes the files
        # a week on (a set per job held that long: about 300,000 at 30 jobs a minute).
        self._granted: dict[bytes, set[tuple[str, bytes]]] = {}

    def refuse(self, ref: TaskRef, worker: str) -> None:
        """Keeps ``worker`` from bidding on ``ref`` again (it served a corrupt result)."""
        self._refused.setdefault((ref.job_id, ref.task), set()).add(worker)

    def grant(self, job_id: bytes, worker: str, digest: bytes) -> None:
        """Lets ``worker`` fetch blob ``digest`` of the job while any of its tasks runs."""
        self.share.grant(worker, digest)
        self._granted.setdefault(job_id, set()).add((worker, digest))

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serves bids and runs task runners until cancelled; resumes unfinished tasks first."""
        self.net.serve(BID, self._on_bid)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # A kill between a task's move and its job's update leaves the job row behind.
            for job_id in await self.store.open_jobs(sorted(TERMINAL | {"verified"})):
                tasks, state = await self._sync_job(job_id)
                if state == "failed":
                    await self._cancel_rest(job_id, tasks)
            for task in await self.store.live_tasks(sorted(TERMINAL | {"verified"})):
                await self._start_runner(task.job_id, task.idx)
            task_status.started()
            await trio.sleep_forever()

    async def submit(self, spec: JobSpec, base_dir: Path) -> bytes:
        """Packs the inputs, records the job and starts its tasks; returns the job id.

        Raises:
            SpecError: a dataset it names is not held whole here.
            PackError: an input is missing or unreadable.
        """
        job_id = os.urandom(JOB_ID_LEN)
        await check_spec(self.share.datasets, spec)
        inputs = await self._pack_inputs(spec, base_dir) if spec.inputs else None
        now = self.net.now_ms()
        row = {
            "job_id": job_id,
            "name": spec.name,
            "spec": json.dumps(to_wire(spec)),
            "inputs": None if inputs is None else msgpack.packb(to_wire(inputs)),
            "inputs_size": 0 if inputs is None else inputs.size,
            "deadline_ms": now + spec.deadline_s * 1000,
        }
        await self.store.insert_job(row, spec.tasks, now)
        if self.escrow is not None:
            await self.escrow.job_submitted(job_id, spec.max_total_wei, now)
        log.info(
            "job submitted", extra={"job": job_id.hex(), "kind": spec.kind, "tasks": spec.tasks}
        )
        for idx in range(spec.tasks):
            await self._start_runner(job_id, idx)
        return job_id

    async def cancel(self, job_id: bytes) -> int:
        """Cancels every unfinished task; returns how many were cancelled."""
        cancelled = 0
        for task in await self.store.tasks(job_id):
            cancelled += await self.cancel_task(job_id, task.idx, "cancelled by the requester")
        return cancelled

    async def task_moved(self, job_id: bytes, task: TaskRow) -> None:
        """Keeps the job's state in step with its tasks (and fails the rest if one fails)."""
        tasks, state = await self._sync_job(job_id)
        log.info(
            "task moved",
            extra={
                "task": task.ref.text(),
                "state": task.state,
                "job_state": state,
                "reason": task.reason,
            },
        )
        if task.state == "failed" and state == "failed":
            await self._cancel_rest(job_id, tasks)
        if self.escrow is not None:
            self.escrow.job_changed()

    async def _sync_job(self, job_id: bytes) -> tuple[list[TaskRow], str]:
        tasks = await self.store.tasks(job_id)
        state = job_state([t.state for t in tasks])
        reason = next((t.reason for t in tasks if t.state in ("failed", "cancelled")), "")
        await self.store.set_job_state(job_id, state, reason, self.net.now_ms())
        self._changed.set()
        self._changed = trio.Event()
        return tasks, state

    async def _cancel_rest(self, job_id: bytes, tasks: list[TaskRow]) -> None:
        for other in tasks:
            await self.cancel_task(job_id, other.idx, "another task of the job failed")

    async def cancel_task(self, job_id: bytes, idx: int, why: str) -> bool:
        """Stops the task's runner and, unless it already ended, closes its attempt (the
        worker keeps what was vouched) and cancels it; True if this call cancelled it."""
        scope = self._runners.get((job_id, idx))
        if scope is not None:
            scope.cancel()
        task = await self.store.task(job_id, idx)
        if task.state in TERMINAL or task.state == "verified":
            return False
        runner = TaskRunner(self, await self._job(job_id), idx)
        if task.state in ("awarded", "transferring", "running"):
            await runner._end_attempt(task, why)
        return await runner._move(task, "cancel", reason=why) is not None

    async def wait_for_change(self) -> None:
        """Returns after the next task move (for followers and tests; no polling)."""
        await self._changed.wait()

    def addrs_of(self, peer: str) -> list[str]:
        return self._peer_addrs.get(peer, [])

    def remember_addrs(self, peer: str, addrs: list[str]) -> None:
        if addrs:
            self._peer_addrs[peer] = list(addrs)
            self._peer_addrs.move_to_end(peer)
            while len(self._peer_addrs) > ADDRS_KEPT:
                self._peer_addrs.popitem(last=False)

    async def job_by_prefix(self, prefix: str) -> bytes:
        """The job whose hex id starts with ``prefix``; KeyError if none or ambiguous."""
        rows = await self.store.find_job(prefix.lower())
        if len(rows) != 1:
            raise KeyError(f"{'no' if not rows else 'more than one'} job matches {prefix!r}")
        return bytes(rows[0]["job_id"])

    # --- internals -----------------------------------------------------------------------

    async def _job(self, job_id: bytes) -> Job:
        row = await self.store.job(job_id)
        if row is None:
            raise KeyError(f"no job {job_id.hex()}")
        spec = from_wire(JobSpec, json.loads(row["spec"]), "spec")
        inputs = (
            None if row["inputs"] is None else from_wire(BlobRef, msgpack.unpackb(row["inputs"]))
        )
        sizes = await dataset_sizes(self.share.datasets, spec)
        return Job(job_id, spec, inputs, row["deadline_ms"], sizes)

    async def _start_runner(self, job_id: bytes, idx: int) -> None:
        assert self._nursery is not None, "the job manager is not running"
        job = await self._job(job_id)
        scope = trio.CancelScope()
        self._runners[(job_id, idx)] = scope
        self._nursery.start_soon(self._run_runner, TaskRunner(self, job, idx), scope)

    async def _run_runner(self, runner: TaskRunner, scope: trio.CancelScope) -> None:
        """Runs ``runner`` until its task ends (or the requester cancels it), then forgets
        the task here: no auction of it opens again but after a restart."""
        key = (runner.job.job_id, runner.idx)
        with scope:
            if self.verify_ready is not None:
                await self.verify_ready.wait()
            await runner.run()
        self._runners.pop(key, None)
        self._refused.pop(key, None)
        self._revoke_once_idle(runner.job)

    def _revoke_once_idle(self, job: Job) -> None:
        """Takes back what the job's orders granted once none of its tasks has a runner: a
        worker fetches a job's blobs only for an attempt that a runner supervises, and only
        a runner's orders grant (a failover's order grants its worker anew)."""
        if job.job_id not in self._granted:
            return
        if any((job.job_id, idx) in self._runners for idx in range(job.spec.tasks)):
            return
        for worker, digest in self._granted.pop(job.job_id, ()):
            self.share.revoke(worker, digest)

    async def _pack_inputs(self, spec: JobSpec, base_dir: Path) -> BlobRef:
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=".tar")
        os.close(fd)
        try:
            await trio.to_thread.run_sync(pack, base_dir, spec.inputs, Path(name))
            return await self.share.put(Path(name))
        finally:
            Path(name).unlink(missing_ok=True)

    async def _on_bid(self, peer: str, payload: Any) -> Any:
        if isinstance(payload, dict) and "pass" in payload:
            self.messages["pass"] += 1
            return self._on_pass(peer, payload)
        self.messages["bid"] += 1
        try:
            opened = self.net.open(payload.get("bid") if isinstance(payload, dict) else None, peer)
        except Invalid as exc:
            raise RequestRejected("invalid", str(exc)) from None
        bid = opened.body
        if not isinstance(bid, Bid):
            raise RequestRejected("invalid", f"expected a bid, got {opened.kind}")
        live = self.auctions.get(bid.ref)
        if live is None:
            raise RequestRejected("closed", "no open auction for that task")
        if self.excluded(bid.ref, peer):  # it failed verification of this task already
            raise RequestRejected("refused", "failed verification of this task before")
        if peer in self._refused.get((bid.ref.job_id, bid.ref.task), ()):
            raise RequestRejected("refused", "served a corrupt result of this task before")
        stake = await self._stake_of(peer, bid)
        arrived = au.BidArrived(bid, peer, self.net.rtt_ms(peer), self.reputation_of(peer),
                                self.flagged_of(peer), stake)  # fmt: skip
        effects = live.machine.handle(arrived, self.net.now_ms())
        refused = next(
            (e for e in effects if isinstance(e, au.RefuseBid) and e.bidder == peer), None
        )
        outcome = f"refused: {refused.reason}" if refused else ""
        # Kept in memory and written when the auction closes: a bid is worth one fsync per
        # auction, not one per bidder (an auction cut short by a crash starts over anyway).
        live.bids[peer] = BidRecord(peer, bid.price_wei_per_s, bid.gpus, bid.est_seconds,
                                    self.net.now_ms(), outcome)  # fmt: skip
        live.feed([e for e in effects if not isinstance(e, au.RefuseBid)])
        if refused is not None:
            raise RequestRejected("refused", refused.reason)
        self.remember_addrs(peer, bid.listen)
        if self.escrow is not None:
            await self.escrow.remember_worker(peer, bid.chain_address)
        return {"ok": True}

    async def _stake_of(self, peer: str, bid: Bid) -> int | None:
        """The bidder's bonded stake, when this requester asks for stake (else None)."""
        if self.stakes is None or self.stakes.min_wei <= 0:
            return None
        from node.chain.stakes import UnboundAddress  # noqa: PLC0415 (web3, if settling)

        if not bid.chain_address:  # a worker that does not settle on chain
            raise RequestRejected("refused", "the bid names no chain account: stake is asked")
        try:
            return await self.stakes.stake_of(peer, bid.chain_address, bid.binding_sig)
        except UnboundAddress as exc:
            raise RequestRejected("invalid", str(exc)) from None

    def _on_pass(self, peer: str, payload: dict[str, Any]) -> Any:
        try:
            ref = from_wire(TaskRef, payload["pass"], "pass")
        except Invalid as exc:
            raise RequestRejected("invalid", str(exc)) from None
        live = self.auctions.get(ref)
        if live is not None:
            reason = str(payload.get("reason", ""))[:200]
            live.feed(live.machine.handle(au.Passed(peer, reason), self.net.now_ms()))
        return {"ok": True}
