"""The sentry's QoS prober: probe workers at random times, check and time their benchmark,
gossip a signed report on each.

One probe at a time (``/idlegrid/qos/1``, :mod:`node.verify.qos_worker`): ``prepare`` a
problem sized by the worker's record (:meth:`~consensus.verify.qos.WorkerQos.next_size`),
``ping`` it for the network's round trip, then ``go``, timed; the timed step's round trip less
the ping's is the product's time, which gives the measured score. Sampled rows of the answer
are recomputed here in float64 (``gpu/probe.py``, in a thread). The outcome goes into the
worker's record, and the record's report (measured score, flag, availability, latency) is
gossiped on ``/idlegrid/1/qos`` and kept in this node's own view.
"""

from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.verify import qos
from consensus.verify.qos_schedule import ProbeSchedule
from gpu import probe
from gpu.bench import BenchUnavailable
from node.verify.topics import QOS, QOS_MAX_BYTES, QOS_PROBE
from p2p.reqresp import RemoteError, RequestError, RequestTimeout

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from consensus.pool import Worker
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
Asker = Callable[[qos.ProbeRequest, float], Awaitable[Any]]
REPORT_TTL_MS = 50 * 60_000  # under the envelope's 1 h; the mean interval is at most 10 min
PREPARE_TIMEOUT_S = 30.0  # the worker's first probe imports torch; 8192^2 inputs take a while
PING_TIMEOUT_S = 5.0
GO_TIMEOUT_S = 10.0  # slow start keeps an honest worker's product near 0.1 s
ROWS_CHECKED = 8  # a worker that computed a fraction f of the rows passes with f**8
POOL_POLL_S = 5.0  # MarketNet has no pool events: new workers are seen this often
RECORDS_KEPT = 10_000  # workers remembered (one that leaves and comes back keeps its record)


def idle(worker: Worker) -> bool:
    """Whether the worker's presence said it was available with every GPU free (so running
    nothing, and with no reason to refuse a probe)."""
    total = sum(offer.count for offer in worker.presence.offers)
    return worker.status == "available" and worker.presence.capacity >= total > 0


@dataclass
class QosProber:
    """Probes the workers of the pool.

    Args:
        net: the network (its pool gives the workers, their claims and addresses).
        mean_ms: the mean interval between two probes of one worker.
        keep: records one of our reports in this node's own view.
        rng: the probes' seeds and times; unpredictable in the daemon.
    """

    net: MarketNet
    mean_ms: int
    keep: Callable[[qos.QosReport], Awaitable[Any]]
    rng: random.Random = field(default_factory=random.SystemRandom)
    records: OrderedDict[str, qos.WorkerQos] = field(default_factory=OrderedDict)
    poll_s: float = POOL_POLL_S
    probes: int = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        schedule = ProbeSchedule(self.mean_ms, self.rng)
        task_status.started()
        while True:
            now = self.net.now_ms()
            pool = {w.peer_id: w for w in self.net.workers()
                    if w.online and w.peer_id != self.net.peer_id}  # fmt: skip
            schedule.sync(set(pool), now)
            peer = schedule.due(now)
            if peer is None:
                deadline = schedule.next_deadline()
                wait = self.poll_s if deadline is None else (deadline - now) / 1000
                await trio.sleep(max(0.0, min(self.poll_s, wait)))  # the next probe, or a look
                continue
            try:
                outcome = await self.probe(pool[peer])
            except BenchUnavailable as exc:
                log.warning("qos probing off: this sentry cannot check", extra={"error": str(exc)})
                await trio.sleep_forever()
            schedule.probed(peer, self.net.now_ms(), busy=isinstance(outcome, qos.Busy))
            await self._report(pool[peer], outcome)

    def record(self, worker: str) -> qos.WorkerQos:
        record = self.records.pop(worker, None) or qos.WorkerQos()
        self.records[worker] = record  # most recently used last
        while len(self.records) > RECORDS_KEPT:
            self.records.popitem(last=False)
        return record

    async def probe(self, worker: Worker) -> qos.Outcome:
        """One probe of ``worker``: prepare, ping, go, check.

        Raises:
            BenchUnavailable: this sentry cannot recompute the rows (no NumPy).
        """
        size = self.record(worker.peer_id).next_size(worker.presence.score)
        pid, seed = os.urandom(qos.PROBE_ID_LEN), self.rng.getrandbits(63)
        ask = self._asker(worker)
        self.probes += 1
        try:
            await ask(qos.ProbeRequest(op="prepare", probe=pid, seed=seed, size=size),
                      PREPARE_TIMEOUT_S)  # fmt: skip
        except RemoteError as exc:
            if exc.code != "busy":
                return qos.Silent(f"{exc.code}: {exc.message}")
            return qos.Busy(dodged=idle(worker), reason=exc.message)
        except RequestError as exc:
            return qos.Silent(str(exc))
        try:
            started = trio.current_time()
            await ask(qos.ProbeRequest(op="ping", probe=pid), PING_TIMEOUT_S)
            latency_ms = round((trio.current_time() - started) * 1000)
            return await self._go(worker, ask, pid, seed, size, latency_ms=latency_ms)
        except RequestError as exc:
            return qos.Silent(str(exc))

    async def _go(self, worker: Worker, ask: Asker, pid: bytes, seed: int, size: int, *,
                  latency_ms: int) -> qos.Answered:  # fmt: skip
        """The timed step and the check of its answer.

        Raises:
            RequestError: the worker could not be reached (not a timeout: that is its time).
        """
        scale_seed = self.rng.getrandbits(63)
        started = trio.current_time()
        try:
            reply = await ask(qos.ProbeRequest(op="go", probe=pid, seed=scale_seed), GO_TIMEOUT_S)
        except RequestTimeout:  # it took the problem and is still at it: that is its time
            return qos.Answered(size, round(GO_TIMEOUT_S * 1000) - latency_ms, latency_ms, True)
        elapsed_ms = max(1, round((trio.current_time() - started) * 1000) - latency_ms)
        problem = await self._check(reply, seed, size, scale_seed)
        if problem:
            log.warning("qos probe answered wrong", extra={"worker": worker.peer_id,
                                                            "problem": problem})  # fmt: skip
        return qos.Answered(size, elapsed_ms, latency_ms, proof_ok=not problem)

    def _asker(self, worker: Worker) -> Asker:
        async def ask(request: qos.ProbeRequest, timeout_s: float) -> Any:
            return await self.net.request(
                worker.peer_id, worker.presence.listen, QOS_PROBE, to_wire(request),
                timeout_s=timeout_s, max_bytes=QOS_MAX_BYTES,
            )  # fmt: skip

        return ask

    async def _check(self, reply: Any, seed: int, size: int, scale_seed: int) -> str:
        """Why the answer is wrong, or ``""``: sampled rows recomputed in float64."""
        try:
            answer = from_wire(qos.ProbeAnswer, reply, "answer")
        except Invalid as exc:
            return str(exc)
        rows = sorted(self.rng.sample(range(size), ROWS_CHECKED))
        expected = await trio.to_thread.run_sync(probe.row_sums, seed, size, scale_seed, rows)
        return probe.sums_ok(answer.sums, size, expected)

    async def _report(self, worker: Worker, outcome: qos.Outcome) -> None:
        record, claimed = self.record(worker.peer_id), worker.presence.score
        was = bool(record.problem(claimed))
        record.add(outcome)
        expires = self.net.now_ms() + REPORT_TTL_MS
        report = record.report(worker.peer_id, claimed, expires, new_nonce())
        log.debug("qos probe", extra={"worker": worker.peer_id, "outcome": repr(outcome)})
        if report.flagged != was:
            log.warning("worker flagged" if report.flagged else "worker flag cleared",
                        extra={"worker": worker.peer_id, "reason": report.reason,
                               "claimed": claimed, "measured": report.measured})  # fmt: skip
        await self.keep(report)
        await self.net.publish(QOS, report)
