"""What a sentry remembers of the attestations it heard is bounded by their horizons: an id
taken up is forgotten once gossip refuses its attestation, and an attempt awaiting a verdict
once settlement no longer holds it and no attestation of it can arrive; inside those horizons
nothing changes (a repeat is not judged twice, a repeat does not start a new hold)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from config.schema import VerifySettings
from consensus.market.messages import TaskRef
from consensus.verify.messages import Attestation
from node.verify.devices import ReplayDevices
from node.verify.sentry import INBOX_GRACE_MS, SWEEP_MS, Sentry, task_key
from tests.unit.verify.factories import REF, honest

T0 = 1_000_000
VERDICT_MS, BISECT_MS = 60_000, 120_000
SETTINGS = VerifySettings(verdict_timeout_ms=VERDICT_MS, bisect_timeout_ms=BISECT_MS)


class Clock:
    peer_id = "me"

    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        return self.now


class NoFails:
    async def failed(self, ref: TaskRef) -> bool:
        return False


def sentry(clock: Clock) -> Sentry:
    return Sentry(clock, NoFails(), None, SETTINGS, {}, lambda: [],  # type: ignore[arg-type]
                  ReplayDevices({}, ""), Path("unused"))  # fmt: skip


def attestation(task: int = 0, expires_ms: int = T0 + 10_000) -> Attestation:
    return honest(2).attestation(ref=replace(REF, task=task), expires_ms=expires_ms)


async def test_an_id_taken_up_is_kept_while_its_attestation_can_arrive() -> None:
    clock, judged = Clock(), []
    s = sentry(clock)

    async def judge(att: Attestation) -> None:
        judged.append(att)

    s.judge = judge  # type: ignore[method-assign]
    att = attestation()
    for t in (T0, att.expires_ms + INBOX_GRACE_MS - 1):
        clock.now = t
        s.heard(attestation(task=t))  # sweeps, each a minute or more apart
        await s._judge_safely(att)
    assert judged == [att], "a repeat within its horizon is not judged twice"
    clock.now = att.expires_ms + INBOX_GRACE_MS + SWEEP_MS
    s.heard(attestation(task=1, expires_ms=clock.now + 10_000))
    assert s.judged == {}, "gossip refuses it now: its id goes"


async def test_an_unjudged_attempt_is_held_its_time_then_forgotten() -> None:
    clock = Clock()
    s = sentry(clock)
    for task in range(100):  # no verdict ever comes (no runtime, no room, sentries offline)
        s.heard(attestation(task))
    assert await s.holds(REF)
    clock.now = T0 + VERDICT_MS
    assert not await s.holds(REF), "paid once the verdict timeout passed"
    clock.now += SWEEP_MS
    s.heard(attestation())  # a repeat: swept, and it starts no new hold
    clock.now += 1
    s.heard(attestation())
    assert not await s.holds(REF), "a repeat does not hold it again"
    assert len(s.awaiting) == 100
    clock.now = T0 + VERDICT_MS + BISECT_MS + SWEEP_MS
    s.heard(attestation(task=500, expires_ms=clock.now + 10_000))
    assert [a.ref.task for a in s.awaiting.values()] == [500], "the others are forgotten"


async def test_a_bisection_hold_keeps_the_attempt_past_the_usual_horizon() -> None:
    clock = Clock()
    s = sentry(clock)
    s.heard(attestation())
    until = T0 + VERDICT_MS + BISECT_MS + 5 * SWEEP_MS  # an escalation heard late
    s.desk.bisect_until[REF] = until
    clock.now = until - 1
    s.heard(attestation(task=1, expires_ms=clock.now + 10_000))
    assert await s.holds(REF), "held for the bisection"
    clock.now = until + SWEEP_MS
    s.heard(attestation(task=2, expires_ms=clock.now + 10_000))
    assert not await s.holds(REF) and task_key(REF) not in s.awaiting
