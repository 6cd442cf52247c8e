"""A sentry's escalations of cross-class misses: its own said again until answered, others'
checked, kept, and answered when it is of the worker's determinism class.

Gossip is lossy, so as the worker does with its attestation (``node/verify/announcer.py``),
a sentry says its escalation again every ``every_ms`` (the same signed envelope: receivers
that have it drop it as a replay) until a verdict on that attestation is heard or the verdict
timeout has passed. An escalation that arrives before its attestation (a same-class sentry
that missed the attestation's gossip: the worker repeats it, no verdict having named it) waits
for it, so it is answered once the attestation comes. Who answers, and the checks, are
:mod:`consensus.verify.escalation`'s.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from consensus.envelope import new_nonce
from consensus.market.messages import TaskRef
from consensus.verify import escalation as esc
from consensus.verify import game as g
from consensus.verify.bisection import will_bisect
from consensus.verify.messages import Attestation, Escalation, attestation_id
from node.market.datasets import NoRoom
from node.sweep import Throttle
from node.verify.devices import ReplayDevices
from node.verify.topics import ESCALATIONS

if TYPE_CHECKING:
    from config.schema import VerifySettings
    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
TTL_MS = 30 * 60_000  # as verdicts
EVERY_MS = 5_000
HEARD_KEPT = 4096  # attestations remembered (escalations come within minutes of them)
EARLY_KEPT = 256  # attestations with escalations waiting for them
EARLY_PER_ATTESTATION = 8  # escalations kept waiting for one attestation
# An envelope taken just before it expired may still wait in the inbox when it expires.
INBOX_GRACE_MS = 60_000
SWEEP_MS = 60_000  # how often answered ids are looked over: one pass a minute of clock


@dataclass
class EscalationDesk:
    net: MarketNet
    store: VerifyStore
    settings: VerifySettings
    devices: ReplayDevices
    sentries: Callable[[], list[str]]  # the sentries this node knows
    answer: Callable[[Attestation, Escalation], Awaitable[None]]  # replays and publishes
    assigned: Callable[[Attestation], bool]  # this sentry judges it itself (bitwise if it can)
    every_ms: int = EVERY_MS
    # attestation ids we answered -> until when that can matter (see _answered)
    answered: dict[bytes, int] = field(default_factory=dict)
    # attestation id -> (attestation, when heard): what an escalation is checked against
    heard: OrderedDict[bytes, tuple[Attestation, int]] = field(default_factory=OrderedDict)
    # attestation id -> escalations (origin, message, envelope) that came before it
    early: OrderedDict[bytes, list[tuple[str, Escalation, bytes]]] = field(
        default_factory=OrderedDict
    )
    # task attempt -> until when settlement holds it for a bisection (ours or another's)
    bisect_until: dict[TaskRef, int] = field(default_factory=dict)
    ours: dict[bytes, tuple[Escalation, int]] = field(default_factory=dict)  # -> said until
    sweeps: Throttle = field(default_factory=lambda: Throttle(SWEEP_MS), init=False)

    async def heard_attestation(self, att: Attestation, nursery: trio.Nursery) -> None:
        att_id = attestation_id(att)
        if att_id in self.heard:
            return
        self.heard[att_id] = (att, self.net.now_ms())
        while len(self.heard) > HEARD_KEPT:
            self.heard.popitem(last=False)
        for origin, up, raw in self.early.pop(att_id, []):
            await self._take(origin, up, raw, nursery)

    def verdict_heard(self, att_id: bytes) -> None:
        """A verdict names the attestation: our escalation of it has been answered."""
        self.ours.pop(att_id, None)

    async def escalate(
        self, att: Attestation, att_id: bytes, sampled: list[int], seed: bytes, up: g.Escalate
    ) -> None:
        """Says the cross-class misses, signed, for a sentry of the worker's class to replay
        (a cross-class miss alone fails nobody: no verdict of ours)."""
        now = self.net.now_ms()
        escalation = esc.escalation_of(
            att, att_id, up, det_class=self.devices.replay_class(att.det_class), seed=seed,
            sampled=sampled,
            tolerance_ppm=self.settings.tolerance_ppm, expires_ms=now + TTL_MS,
            nonce=new_nonce(),
        )  # fmt: skip
        await self.store.add_escalation(self.net.peer_id, escalation, self.net.seal(escalation),
                                        evidence=up.evidence, now_ms=now)  # fmt: skip
        self.ours[att_id] = (escalation, now + self.settings.verdict_timeout_ms)
        heard = self.heard.get(att_id)  # held from when the attestation came, as awaited
        self._bisected(att, escalation, now if heard is None else heard[1])
        await self.net.publish(ESCALATIONS, escalation)
        log.warning("escalated", extra={"task": att.ref.text(), "worker": att.worker,
                                        "reason": up.reason})  # fmt: skip

    async def run(self, inbox: Any, nursery: trio.Nursery) -> None:
        """Follows others' escalations, and says ours again until answered."""
        nursery.start_soon(self._repeat)
        async for msg in inbox:
            body = msg.opened.body
            if not isinstance(body, Escalation) or msg.origin == self.net.peer_id:
                continue
            if body.attestation not in self.heard and msg.origin in self.sentries():
                waiting = self.early.setdefault(body.attestation, [])
                if len(waiting) < EARLY_PER_ATTESTATION:
                    waiting.append((msg.origin, body, msg.opened.raw))
                while len(self.early) > EARLY_KEPT:
                    self.early.popitem(last=False)
                continue
            await self._take(msg.origin, body, msg.opened.raw, nursery)

    async def _take(self, origin: str, up: Escalation, raw: bytes, nursery: trio.Nursery) -> None:
        heard = self.heard.get(up.attestation)
        att = None if heard is None else heard[0]
        check = esc.check_escalation(up, att, origin in self.sentries())
        if check.action == "reject":
            self.net.blame(origin, f"escalation: {check.reason}")
        if heard is None or check.action != "accept":
            log.info("escalation not taken", extra={"from": origin, "why": check.reason})
            return
        await self.store.add_escalation(origin, up, raw, evidence=None, now_ms=self.net.now_ms())
        self._bisected(heard[0], up, heard[1])
        why = esc.answer_refusal(
            heard[0], self.devices.classes, assigned=self.assigned(heard[0]),
            answered=up.attestation in self.answered, heard_ms=heard[1],
            now_ms=self.net.now_ms(), timeout_ms=self.settings.verdict_timeout_ms,
        )  # fmt: skip
        if why:
            log.info("escalation not answered", extra={"task": up.ref.text(), "why": why})
            return
        self._answered(up.attestation, heard[0])
        nursery.start_soon(self._answer_safely, heard[0], up)

    def _answered(self, att_id: bytes, att: Attestation) -> None:
        """Notes ``att_id`` answered, and forgets those answered that nothing can ask again.

        An answer is refused anyway once the verdict timeout has passed since the attestation
        was heard, and it cannot be heard anew once gossip refuses it (its id covers its
        expiry): past both, an escalation of it is refused as too late, answered or not.
        """
        now, wait = self.net.now_ms(), self.settings.verdict_timeout_ms
        self.answered[att_id] = att.expires_ms + INBOX_GRACE_MS + wait
        if self.sweeps.due(now):
            self.answered = {i: until for i, until in self.answered.items() if until > now}

    def _bisected(self, att: Attestation, up: Escalation, heard_ms: int) -> None:
        """Holds the attempt's payment past the verdict timeout while its escalating sentry
        bisects the miss (:func:`consensus.verify.bisection.will_bisect`)."""
        if will_bisect(att, up.det_class):
            wait = self.settings.verdict_timeout_ms + self.settings.bisect_timeout_ms
            self.bisect_until[att.ref] = heard_ms + wait
            while len(self.bisect_until) > HEARD_KEPT:
                del self.bisect_until[next(iter(self.bisect_until))]

    async def _answer_safely(self, att: Attestation, up: Escalation) -> None:
        try:
            await self.answer(att, up)
        except NoRoom as exc:  # ours: no verdict rather than a wrong one
            log.warning("cannot answer", extra={"task": att.ref.text(), "error": str(exc)})
        except Exception:
            log.exception("answering an escalation failed", extra={"task": att.ref.text()})

    async def _repeat(self) -> None:
        while True:
            await trio.sleep(self.every_ms / 1000)
            now = self.net.now_ms()
            for att_id, (up, until) in list(self.ours.items()):
                if now >= until:
                    del self.ours[att_id]
                    log.info("escalation unanswered", extra={"task": up.ref.text()})
                    continue
                await self.net.publish(ESCALATIONS, up)
