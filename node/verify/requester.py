"""The requester's side: hear verdicts, and tell the task runner how its task was judged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import trio

from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from consensus.verify.verdicts import REP_START
from node.verify.topics import VERDICTS

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
Outcome = Literal["verified", "rejected", "unverified"]


@dataclass
class Verdicts:
    net: MarketNet
    store: VerifyStore
    quorum: int
    sentries_known: Callable[[], bool]
    changed: trio.Event = field(default_factory=trio.Event)
    failed_on: dict[tuple[bytes, int], set[str]] = field(default_factory=dict)  # task -> workers
    scores: dict[str, int] = field(default_factory=dict)  # reputation, ppm

    def excluded(self, ref: TaskRef, worker: str) -> bool:
        """Whether ``worker`` failed verification of an earlier attempt at this task."""
        return worker in self.failed_on.get((ref.job_id, ref.task), set())

    def reputation_of(self, worker: str) -> int:
        """Reputation on the auction's 0..1000 scale (500 neutral)."""
        return self.scores.get(worker, REP_START) // 1000

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.net.subscribe(VERDICTS, frozenset({Verdict.KIND}))
        self.scores = await self.store.reputations()
        task_status.started()
        async for msg in inbox:
            verdict = msg.opened.body
            if isinstance(verdict, Verdict):
                await self.store.add_verdict(
                    verdict.attestation,
                    msg.origin,
                    verdict,
                    msg.opened.raw,
                    evidence=None,
                    now_ms=self.net.now_ms(),
                )
                if not verdict.passed:
                    key = (verdict.ref.job_id, verdict.ref.task)
                    self.failed_on.setdefault(key, set()).add(verdict.worker)
                self.scores[verdict.worker] = await self.store.reputation(verdict.worker)
                self.changed.set()
                self.changed = trio.Event()

    async def outcome(self, ref: TaskRef, timeout_ms: int) -> tuple[Outcome, str]:
        """Waits for the sentries' judgement of ``ref``: any fail rejects, ``quorum`` passes
        verify; none within ``timeout_ms`` (or no sentry known at all) leaves it unverified."""
        if not self.sentries_known():
            return "unverified", "no sentry in the network"
        deadline = self.net.now_ms() + timeout_ms
        while True:
            rows = await self.store.verdicts(ref)
            fails = [r for r in rows if not r["passed"]]
            if fails:
                return "rejected", f"failed verification: {fails[0]['reason']}"
            if len(rows) >= self.quorum:
                return "verified", f"verified by {len(rows)} sentries"
            left = deadline - self.net.now_ms()
            if left <= 0:
                return "unverified", f"no verdict within {timeout_ms} ms"
            with trio.move_on_after(left / 1000):
                await self.changed.wait()
