"""The requester's side of one running attempt: vouchers out every interval, reports in,
checkpoint files fetched beside them.

    report from the worker            what the requester does
    --------------------------------  ----------------------------------------------------
    fetching / running                moves the task on (awarded -> fetching -> running)
    checkpoints                       records each (not held yet) and queues its file; a
                                      fetcher beside the meter fetches them in order and
                                      makes the latest held one the task's resume point
    done (with a result)              lets the fetcher finish what was reported; the task
                                      is attested
    failed                            stops the fetcher; the attempt ends, the task fails
    lost / stopped, or silent for     lets the fetcher finish for up to lost_after_ms; the
      lost_after_ms                   attempt ends paid up to the last checkpoint held;
                                      the task fails over
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import Wei, from_wire, to_wire
from consensus.market.lifecycle import TaskEvent
from consensus.market.messages import BlobRef, Checkpoint, TaskReport, Voucher
from consensus.market.meter import owed_wei
from node.market.blobshare import FetchFailed
from node.market.store import TaskRow
from p2p.reqresp import RequestError

if TYPE_CHECKING:
    from node.market.task_runner import TaskRunner

log = logging.getLogger(__name__)

METER = "/idlegrid/control/meter/1"


class Supervision:
    """One attempt's run, seen from the requester: vouchers out, reports in."""

    def __init__(self, runner: TaskRunner, task: TaskRow, attempt: Any, logs: int) -> None:
        self.runner, self.task, self.net = runner, task, runner.net
        self.params, self.store = runner.params, runner.store
        self.worker, self.addrs = attempt["worker"], json.loads(attempt["addrs"])
        runner.mgr.remember_addrs(self.worker, self.addrs)
        self.rate = int(attempt["price_wei"]) * attempt["gpus"]
        self.started_ms = attempt["started_ms"]
        self.budget = runner.job.spec.task_budget_wei()
        self.log_offset, self.since = logs, 0
        self.checkpoint_s: int | None = None  # seconds at the last checkpoint of ours we hold
        self._fetches: trio.MemorySendChannel[Checkpoint]
        self._fetcher, self._fetched = trio.CancelScope(), trio.Event()
        self._row = trio.Lock()  # one writer of the task row at a time (CAS on its revision)

    async def run(self) -> None:
        """Meters the attempt until it ends. Checkpoint files are fetched beside the meter,
        one at a time and in order: fetched in line with it, a transfer longer than the
        voucher grace (a big model's state) held back the vouchers and stopped the worker
        whose progress it was saving."""
        send, receive = trio.open_memory_channel[Checkpoint](math.inf)
        self._fetches = send
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch_all, receive)
            try:
                await self._meter()
            finally:
                self._fetcher.cancel()  # the attempt is over: nothing more to save

    async def _meter(self) -> None:
        last_ok = self.net.now_ms()
        while True:
            now = self.net.now_ms()
            if now >= self.runner.job.deadline_ms:
                return  # the runner's loop expires the task
            try:
                report = await self._exchange(now)
            except (RequestError, Invalid) as exc:
                if now - last_ok >= self.params.lost_after_ms:
                    await self._lost(f"unreachable for {now - last_ok} ms: {exc}")
                    return
            else:
                last_ok = now
                if await self._absorb(report):
                    return
            await self.runner._sleep_ms(self.params.voucher_interval_ms)

    async def _exchange(self, now: int) -> TaskReport:
        owed = owed_wei(self.rate, self.started_ms, now, self.budget)
        escrow = self.runner.mgr.escrow
        signed = None if escrow is None else await escrow.sign(self.task.ref, self.worker, owed)
        voucher = Voucher(
            expires_ms=now + self.params.demand_ttl_ms,
            nonce=new_nonce(),
            ref=self.task.ref,
            worker=self.worker,
            amount_wei=Wei(owed),
            seconds=max(0, now - self.started_ms) // 1000,
            chain_sig=None if signed is None else signed[0],
            spend_wei=None if signed is None else Wei(signed[1].cumulative),
            spend_sig=None if signed is None else signed[1].signature,
        )
        raw = self.net.seal(voucher)
        payload = {"voucher": raw, "since": self.since, "log_offset": self.log_offset}
        reply = await self.net.request(
            self.worker,
            self.addrs,
            METER,
            payload,
            timeout_s=self.params.voucher_interval_ms / 1000 + 3,
            keep=True,  # one every few seconds while the task runs: one stream for them all
        )
        await self.store.vouched(self.task.ref, owed, raw)
        report = from_wire(TaskReport, reply, "report")
        if report.ref != self.task.ref:
            raise Invalid("report.ref", "names another task")
        return report

    async def _absorb(self, report: TaskReport) -> bool:
        """Takes in a report; True once this attempt is over (done, failed or lost)."""
        if report.log:
            await self.store.append_logs(self.task.ref, report.log_offset, report.log)
            self.log_offset = report.log_offset + len(report.log)
        for checkpoint in report.checkpoints:
            await self._note(checkpoint)
        if report.state == "fetching" and self.task.state == "awarded":
            await self._move("fetching")
        elif report.state == "running" and self.task.state in ("awarded", "transferring"):
            await self._move("running")
        elif report.state == "done" and report.result is not None:
            await self._finish_fetching()  # the files reported are kept with the result
            result = msgpack.packb(to_wire(report.result))
            await self._move("done", result=result, result_hash=report.result_hash)
            return True
        elif report.state == "failed":
            await self._stop_fetching()
            await self.runner._end_attempt(self.task, report.error or "failed")
            await self._move("fail", reason=f"the workload failed: {report.error}"[:300])
            return True
        elif report.state in ("lost", "stopped"):
            await self._lost(f"worker reports {report.state}: {report.error}")
            return True
        return False

    async def _note(self, checkpoint: Checkpoint) -> None:
        """Records a reported checkpoint (not held yet) and queues its file for fetching."""
        await self._record(checkpoint, held=False)
        self.since = max(self.since, checkpoint.index + 1)
        if checkpoint.blob is not None:
            self._fetches.send_nowait(checkpoint)

    async def _record(self, checkpoint: Checkpoint, *, held: bool) -> None:
        await self.store.add_checkpoint(
            self.task.ref,
            checkpoint.index,
            hash_=checkpoint.hash,
            chained=checkpoint.chained,
            seconds=checkpoint.seconds,
            held=held,
        )

    async def _fetch_all(self, receive: trio.MemoryReceiveChannel[Checkpoint]) -> None:
        with self._fetcher:
            async for checkpoint in receive:
                await self._fetch(checkpoint)
        self._fetched.set()

    async def _finish_fetching(self, within_s: float = math.inf) -> None:
        """Lets the fetcher take every file queued so far, for up to ``within_s``, then stops
        it: the attempt's end then reads a resume point that no fetch changes afterwards."""
        self._fetches.close()
        with trio.move_on_after(within_s):
            await self._fetched.wait()
        await self._stop_fetching()

    async def _stop_fetching(self) -> None:
        """Stops the fetcher and waits until it has: the attempt's end then reads a resume
        point that no fetch changes afterwards."""
        self._fetcher.cancel()
        await self._fetched.wait()

    async def _fetch(self, checkpoint: Checkpoint) -> None:
        assert checkpoint.blob is not None
        try:
            await self.runner.mgr.share.fetch(checkpoint.blob, self.runner._addrs_of)
        except FetchFailed as exc:
            log.warning(
                "checkpoint not fetched",
                extra={"task": self.task.ref.text(), "error": str(exc)},
            )
            return
        mine = Checkpoint(
            index=checkpoint.index,
            hash=checkpoint.hash,
            chained=checkpoint.chained,
            seconds=checkpoint.seconds,
            blob=BlobRef(
                hash=checkpoint.blob.hash, size=checkpoint.blob.size, holders=[self.net.peer_id]
            ),
        )
        with trio.CancelScope(shield=True):  # fetched: recorded whole, or a restart re-fetches
            await self._record(checkpoint, held=True)
            async with self._row:
                moved = await self.store.move_task(
                    self.task, self.net.now_ms(), resume=msgpack.packb(to_wire(mine))
                )
                if moved is not None:
                    self.task = moved
                self.checkpoint_s = checkpoint.seconds
        log.info(  # a failover from here on resumes after this segment
            "checkpoint held",
            extra={"task": self.task.ref.text(), "segment": checkpoint.index},
        )

    async def _lost(self, why: str) -> None:
        # A worker that stopped is still there to serve what it reported (its pay and the
        # resume point count on it); a vanished one fails those fetches fast or times out.
        await self._finish_fetching(within_s=self.params.lost_after_ms / 1000)
        log.info("worker lost, failing over", extra={"task": self.task.ref.text(), "reason": why})
        await self.runner._end_attempt(self.task, why, checkpoint_s=self.checkpoint_s or 0)
        await self._move("lost", reason=why[:300])

    async def _move(self, event: TaskEvent, **values: Any) -> None:
        async with self._row:  # the fetcher moves the row too (its resume point)
            moved = await self.runner._move(self.task, event, **values)
            if moved is not None:
                self.task = moved
