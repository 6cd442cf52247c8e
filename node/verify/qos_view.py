"""What a node knows of workers' QoS: the latest report of each known sentry on each worker.

Every node keeps this view (``qos`` service of each role): requesters rank bids by it (a
flagged worker's bids are scored at its measured score, :mod:`consensus.market.auction`), and
``idlegrid market`` shows it. Reports come over gossip (``/idlegrid/1/qos``), signed; one from
a peer that is not a known sentry is dropped (a sentry's hello may arrive later: its next
report counts). Reports are kept in sqlite until they expire, so a requester restarted while a
worker is flagged still ranks it down.

A worker counts as flagged while at least ``quorum`` (``verify.quorum``) known sentries' live
reports flag it: a lone hostile sentry can down-rank workers where the quorum is 1, never
slash them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from consensus.verify.qos import QosReport
from node.sweep import Throttle
from node.verify.topics import QOS

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
# Any peer may say it is a sentry, so a worker's reports are capped (an honest network has
# far fewer sentries): past it, the one heard longest ago goes, a peer's not known as a
# sentry first.
REPORTS_PER_WORKER = 256
SWEEP_MS = 60_000  # how often expired reports are dropped: one pass a minute of clock


class QosView:
    def __init__(
        self,
        net: MarketNet,
        store: VerifyStore,
        sentries: Callable[[], list[str]],
        quorum: int = 1,
    ) -> None:
        self.net, self.store, self.sentries, self.quorum = net, store, sentries, quorum
        # worker -> sentry -> latest, the latest heard last; expired ones go in _sweep
        self.reports: dict[str, dict[str, QosReport]] = {}
        self.changed = trio.Event()
        self.sweeps = Throttle(SWEEP_MS)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.net.subscribe(QOS, frozenset({QosReport.KIND}))
        await self.load()
        task_status.started()
        async for msg in inbox:
            if isinstance(msg.opened.body, QosReport):
                await self.record(msg.opened.body, msg.origin)

    async def load(self) -> None:
        """Takes the reports kept before a restart that have not expired."""
        for sentry, report in await self.store.qos_reports(self.net.now_ms()):
            self._keep(sentry, report)

    async def record(self, report: QosReport, sentry: str) -> bool:
        """Keeps ``sentry``'s report if it is a known sentry's and newer than what we have."""
        if sentry not in self.sentries():
            log.debug("qos report from a peer not known as a sentry", extra={"peer": sentry})
            return False
        if not self._keep(sentry, report):
            return False
        await self.store.keep_qos(sentry, report, self.net.now_ms())
        if report.flagged:
            log.info("worker flagged", extra={"worker": report.worker, "sentry": sentry,
                                              "reason": report.reason})  # fmt: skip
        self.changed.set()
        self.changed = trio.Event()
        return True

    def _keep(self, sentry: str, report: QosReport) -> bool:
        held = self.reports.setdefault(report.worker, {})
        known = held.get(sentry)
        if known is not None and known.expires_ms > report.expires_ms:
            return False  # gossip delivered an older one late
        held.pop(sentry, None)
        held[sentry] = report
        if len(held) > REPORTS_PER_WORKER:  # strangers' reports go first, the oldest first
            sentries = set(self.sentries())
            order = [s for s in held if s not in sentries] + [s for s in held if s in sentries]
            for gone in order[: len(held) - REPORTS_PER_WORKER]:
                del held[gone]
        now = self.net.now_ms()
        if self.sweeps.due(now):
            self._sweep(now)
        return True

    def _sweep(self, now: int) -> None:
        """Drops expired reports (live() no longer counts them), and workers left with none."""
        for worker, held in list(self.reports.items()):
            for sentry in [s for s, r in held.items() if r.expires_ms <= now]:
                del held[sentry]
            if not held:
                del self.reports[worker]

    def live(self, worker: str) -> dict[str, QosReport]:
        """Unexpired reports on ``worker`` from sentries we know now."""
        now, known = self.net.now_ms(), set(self.sentries())
        held = self.reports.get(worker, {})
        return {s: r for s, r in held.items() if s in known and r.expires_ms > now}

    def flag_of(self, worker: str) -> int | None:
        """The measured score of a flagged worker (0: flagged without one), or None."""
        flagging = [r for r in self.live(worker).values() if r.flagged]
        if not flagging or len(flagging) < self.quorum:
            return None
        return max(r.measured for r in flagging)

    def view(self, worker: str) -> dict[str, Any] | None:
        """What ``idlegrid market`` shows: the sentries' latest word, flag first."""
        live = self.live(worker)
        if not live:
            return None
        flagged = self.flag_of(worker) is not None
        first = max(live.values(), key=lambda r: (r.flagged, r.expires_ms))
        return {
            "flagged": flagged,
            "reason": first.reason if flagged else "",
            "claimed": first.claimed,
            "measured": first.measured,
            "latency_ms": first.latency_ms,
            "probes": sum(r.probes for r in live.values()),
            "answered": sum(r.answered for r in live.values()),
            "busy": sum(r.busy for r in live.values()),
            "sentries": len(live),
        }
