"""A worker's attestations said again until sentries judge them: gossip is lossy, cuts heal.

An attestation gossiped once can miss a sentry (a partition, a mesh not yet formed, a sentry
restarting); the requester then waits out ``verify.verdict_timeout_ms`` and accepts the task
unverified, which is worse for both sides than a late check. So the worker publishes it again
every ``every_ms`` until verdicts from ``quorum`` sentries name it, or ``for_ms`` have passed
(by then the requester has decided without them). Repeats are the same signed envelope:
receivers that already have it drop it as a replay (ignored, never blamed).

Only verdicts from peers the node knows as sentries count, so anyone else gossiping a verdict
for our attestation cannot silence it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from consensus.verify.messages import Attestation, Verdict
from node.verify.topics import ATTESTS, VERDICTS

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.market.net import MarketNet

log = logging.getLogger(__name__)

EVERY_MS = 5_000
FOR_MS = 120_000  # the default verify.verdict_timeout_ms: the requester decides by then


@dataclass
class _Pending:
    att: Attestation
    until_ms: int
    judged_by: set[str] = field(default_factory=set)


class AttestationAnnouncer:
    def __init__(
        self,
        net: MarketNet,
        is_sentry: Callable[[str], bool],
        quorum: int = 1,
        every_ms: int = EVERY_MS,
        for_ms: int = FOR_MS,
    ) -> None:
        self.net, self.is_sentry, self.quorum = net, is_sentry, quorum
        self.every_ms, self.for_ms = every_ms, for_ms
        self.pending: dict[bytes, _Pending] = {}  # attestation id -> what is still unjudged

    async def announce(self, att_id: bytes, att: Attestation) -> None:
        """Publishes ``att`` now, and again every ``every_ms`` until it is judged."""
        until = min(self.net.now_ms() + self.for_ms, att.expires_ms)
        self.pending[att_id] = _Pending(att, until)
        await self.net.publish(ATTESTS, att)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        verdicts = await self.net.subscribe(VERDICTS, frozenset({Verdict.KIND}))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._repeat)
            task_status.started()
            async for msg in verdicts:
                verdict = msg.opened.body
                if isinstance(verdict, Verdict):
                    self._heard(verdict, msg.origin)

    def _heard(self, verdict: Verdict, sentry: str) -> None:
        pending = self.pending.get(verdict.attestation)
        if pending is None or verdict.worker != self.net.peer_id or not self.is_sentry(sentry):
            return
        pending.judged_by.add(sentry)
        if len(pending.judged_by) >= self.quorum:
            del self.pending[verdict.attestation]

    async def _repeat(self) -> None:
        while True:
            await trio.sleep(self.every_ms / 1000)
            now = self.net.now_ms()
            for att_id, pending in list(self.pending.items()):
                if now >= pending.until_ms:
                    del self.pending[att_id]
                    log.info("attestation unjudged", extra={"task": pending.att.ref.text()})
                    continue
                log.info(
                    "attestation said again",
                    extra={"task": pending.att.ref.text(), "judged_by": len(pending.judged_by)},
                )
                await self.net.publish(ATTESTS, pending.att)
