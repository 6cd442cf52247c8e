"""The requester's side: hear verdicts, and tell the task runner how its task was judged.

It also hears attestations, for one check only it can make: an attempt resumed from an earlier
worker's checkpoint must attest a continuation of the checkpoint this requester handed over
(:func:`~consensus.verify.messages.check_resume`), not of a history of the worker's making.

And it hears escalations (a sentry's cross-class miss, :mod:`consensus.verify.escalation`):
they never reject; a same-class sentry's verdict that answers one counts like any verdict, and
if none comes within the verdict timeout the attempt is accepted, saying so. When the
escalating sentry will bisect its miss with the worker
(:func:`consensus.verify.bisection.will_bisect`), the wait is ``bisect_timeout_ms`` longer:
probes replay up to a segment each, and its verdict is the one that settles the miss.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from consensus.errors import Invalid
from consensus.market.messages import TaskRef
from consensus.peer_id import short
from consensus.verify.bisection import will_bisect
from consensus.verify.escalation import check_escalation, on_timeout
from consensus.verify.game import unverifiable
from consensus.verify.messages import (
    Attestation,
    Escalation,
    Verdict,
    attestation_id,
    check_resume,
)
from consensus.verify.verdicts import REP_START
from node.identity import wallet_binding_ok
from node.market.store import MarketStore
from node.verify.sentry import task_key
from node.verify.topics import ATTESTS, ESCALATIONS, VERDICTS

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
# accepted: paid unverified because a sentry's cross-class miss found no same-class sentry
Outcome = Literal["verified", "rejected", "unverified", "accepted"]
ATTESTATIONS_KEPT = 4096  # the latest heard, any task's: ours are judged within minutes
# How long past its job's deadline a task's failed workers stay excluded: an auction opened
# just before the deadline still takes bids for its own short timers, far less than this.
EXCLUDED_PAST_DEADLINE_MS = 3_600_000


@dataclass
class Verdicts:
    net: MarketNet
    store: VerifyStore
    quorum: int
    sentries_known: Callable[[], bool]
    is_sentry: Callable[[str], bool] = lambda _peer: True
    changed: trio.Event = field(default_factory=trio.Event)
    # our job's task -> workers that failed it, until the job can auction it no more (below);
    # kept in sqlite too, and taken back at start
    failed_on: dict[tuple[bytes, int], set[str]] = field(default_factory=dict)
    excluded_until: dict[tuple[bytes, int], int] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)  # reputation, ppm
    # task key -> (id, attestation) of the latest attestation heard for that task attempt
    attested: OrderedDict[bytes, tuple[bytes, Attestation]] = field(default_factory=OrderedDict)
    bisect_timeout_ms: int = 0  # verify.bisect_timeout_ms
    bisecting: set[bytes] = field(default_factory=set)  # task keys a sentry will bisect
    ready: trio.Event | None = None  # set once exclusions are loaded (JobManager waits on it)
    # with stake asked of bidders (node.chain.stakes): the chain account a worker bid
    # with, whose stake was checked; its attestation must name the same, or a slash of the
    # attested account would take someone else's stake, or none
    staked_account: Callable[[str], Awaitable[str | None]] | None = None

    def excluded(self, ref: TaskRef, worker: str) -> bool:
        """Whether ``worker`` failed verification of an earlier attempt at this task."""
        return worker in self.failed_on.get((ref.job_id, ref.task), set())

    def reputation_of(self, worker: str) -> int:
        """Reputation on the auction's 0..1000 scale (500 neutral)."""
        return self.scores.get(worker, REP_START) // 1000

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox = await self.net.subscribe(VERDICTS, frozenset({Verdict.KIND}))
        atts = await self.net.subscribe(ATTESTS, frozenset({Attestation.KIND}))
        escalations = await self.net.subscribe(ESCALATIONS, frozenset({Escalation.KIND}))
        self.scores = await self.store.reputations()
        await self._load_exclusions()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_attestations, atts)
            nursery.start_soon(self._follow_escalations, escalations)
            if self.ready is not None:
                self.ready.set()
            task_status.started()
            async for msg in inbox:
                verdict = msg.opened.body
                if isinstance(verdict, Verdict):
                    await self._heard(verdict, msg.origin, msg.opened.raw)

    async def _heard(self, verdict: Verdict, sentry: str, raw: bytes) -> None:
        """Keeps a verdict unless the worker it judges gossiped it. Whether its sentry is one
        we know (with chain settlement, one staked as a sentry) is asked when it is counted
        (:meth:`outcome`): its role may come later."""
        if sentry == verdict.worker:
            log.info("verdict not counted", extra={"task": verdict.ref.text(), "sentry": sentry,
                                                   "why": "by the worker it judges"})  # fmt: skip
            return
        await self.store.add_verdict(
            verdict.attestation, sentry, verdict, raw, evidence=None, now_ms=self.net.now_ms()
        )
        if not verdict.passed and self.is_sentry(sentry):  # else outcome() does, if it counts
            await self._exclude(verdict.ref, verdict.worker, ours=False)
        self.scores[verdict.worker] = await self.store.reputation(verdict.worker)
        self._wake()

    async def _load_exclusions(self) -> None:
        """Takes back the exclusions still in force: a restart must not hand a task back to
        the worker that failed it."""
        for job_id, task, worker, until_ms in await self.store.exclusions(self.net.now_ms()):
            key = (job_id, task)
            self.failed_on.setdefault(key, set()).add(worker)
            self.excluded_until[key] = max(self.excluded_until.get(key, 0), until_ms)

    async def _follow_attestations(self, inbox: Any) -> None:
        async for msg in inbox:
            att = msg.opened.body
            if isinstance(att, Attestation) and att.worker == msg.origin:
                key = task_key(att.ref)
                self.attested[key] = (attestation_id(att), att)
                self.attested.move_to_end(key)
                while len(self.attested) > ATTESTATIONS_KEPT:
                    self.attested.popitem(last=False)
                self._wake()

    async def _follow_escalations(self, inbox: Any) -> None:
        """Keeps escalations of attestations we heard (ours are the tasks we wait on)."""
        async for msg in inbox:
            esc = msg.opened.body
            if not isinstance(esc, Escalation):
                continue
            heard = self.attested.get(task_key(esc.ref))
            att = heard[1] if heard is not None and heard[0] == esc.attestation else None
            check = check_escalation(esc, att, self.is_sentry(msg.origin))
            if check.action == "reject":
                self.net.blame(msg.origin, f"escalation: {check.reason}")
            if check.action != "accept":
                log.debug("escalation not kept", extra={"from": msg.origin, "why": check.reason})
                continue
            await self.store.add_escalation(
                msg.origin, esc, msg.opened.raw, evidence=None, now_ms=self.net.now_ms()
            )
            if att is not None and will_bisect(att, esc.det_class):
                self.bisecting.add(task_key(esc.ref))
            self._wake()

    async def _exclude(self, ref: TaskRef, worker: str, *, ours: bool) -> None:
        """Keeps ``worker`` from bidding on ``ref``'s task again for as long as its job can
        auction it: only our jobs do (excluded() answers for our auctions alone), and only
        until their deadline. ``ours``: the caller knows the job is ours even without a row
        (no running node lacks one: job rows are never deleted)."""
        now, key = self.net.now_ms(), (ref.job_id, ref.task)
        for old in [k for k, until in self.excluded_until.items() if until <= now]:
            del self.excluded_until[old], self.failed_on[old]
        job = await MarketStore(self.store.db).job(ref.job_id)
        if job is None and not ours:
            return  # another requester's task: we never auction it
        until_ms = (now if job is None else int(job["deadline_ms"])) + EXCLUDED_PAST_DEADLINE_MS
        await self.store.exclude(ref, worker, until_ms, now)
        self.failed_on.setdefault(key, set()).add(worker)
        self.excluded_until[key] = max(self.excluded_until.get(key, 0), until_ms)

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def outcome(self, ref: TaskRef, timeout_ms: int) -> tuple[Outcome, str]:
        """Waits for the sentries' judgement of ``ref``: any fail rejects, ``quorum`` passes
        verify; none within ``timeout_ms`` (or no sentry known at all) leaves it unverified,
        or accepted with the reason when a sentry escalated a cross-class miss."""
        if not self.sentries_known():
            return "unverified", "no sentry in the network"
        deadline, waited_ms = self.net.now_ms() + timeout_ms, timeout_ms
        while True:  # only known sentries' verdicts count: anyone can gossip one
            rows = [r for r in await self.store.verdicts(ref) if self.is_sentry(r["sentry"])]
            fails = [r for r in rows if not r["passed"]]
            if fails:  # on any attestation of this attempt
                for row in fails:  # a task we wait on is ours, whether or not it has a row
                    await self._exclude(ref, row["worker"], ours=True)
                return "rejected", f"failed verification: {fails[0]['reason']}"
            heard = self.attested.get(task_key(ref))
            if heard is not None:  # passes count on the attestation we checked, only
                problem = await self._resume_problem(ref, heard[1]) or await self._account_problem(
                    heard[1]
                )
                if problem:  # the task is not offered to that worker again
                    await self._exclude(ref, heard[1].worker, ours=True)
                    return "rejected", problem
                rows = [r for r in rows if r["attestation"] == heard[0]]
            if len(rows) >= self.quorum:
                return _verified(rows)
            left = deadline - self.net.now_ms()
            bisecting = self.bisect_timeout_ms > 0 and task_key(ref) in self.bisecting
            if left <= 0 and waited_ms == timeout_ms and bisecting:
                deadline, waited_ms = (
                    deadline + self.bisect_timeout_ms,
                    waited_ms + self.bisect_timeout_ms,
                )
                more = {"task": ref.text(), "more_ms": self.bisect_timeout_ms}
                log.info("waiting for a bisection", extra=more)
                continue
            if left <= 0:
                return await self._timed_out(ref, heard, waited_ms)
            with trio.move_on_after(left / 1000):
                await self.changed.wait()

    async def _timed_out(
        self, ref: TaskRef, heard: tuple[bytes, Attestation] | None, timeout_ms: int
    ) -> tuple[Outcome, str]:
        rows = await self.store.escalations(ref)
        if heard is not None:
            rows = [r for r in rows if r["attestation"] == heard[0]]
        return on_timeout([(r["sentry"], r["reason"]) for r in rows], timeout_ms)

    async def _account_problem(self, att: Attestation) -> str:
        """Why an attestation names another chain account than the staked one its worker bid
        with, or ``""``."""
        if self.staked_account is None:
            return ""
        bid_with = await self.staked_account(att.worker)
        if bid_with is None:
            return ""
        if bytes.fromhex(bid_with.removeprefix("0x")) != att.chain_address:
            attested = "0x" + att.chain_address.hex() if att.chain_address else "no chain account"
            return f"attested with {attested}, not the staked {bid_with} it bid with"
        if not wallet_binding_ok(att.worker, att.chain_address, att.binding_sig):
            return f"attested with {bid_with} but no valid binding: sentries could not slash it"
        return ""

    async def _resume_problem(self, ref: TaskRef, att: Attestation) -> str:
        """Why a resumed attestation does not continue what we handed over, or ``""``."""
        if att.first == 0:
            return ""
        handed = await self.store.handed_over(ref, att.first - 1)
        if handed is None:
            return f"resumed after segment {att.first - 1}, a checkpoint we never handed over"
        try:
            check_resume(att, handed)
        except Invalid as exc:
            return f"resumed from another checkpoint than ours: {exc}"
        return ""


def _verified(rows: list[Any]) -> tuple[Outcome, str]:
    """Enough passes: verified, unless a sentry found the job itself not deterministic; the
    work is then paid unchecked (accepted), and the requester told why."""
    unsteady = [r for r in rows if unverifiable(bool(r["passed"]), str(r["reason"]))]
    if unsteady:
        return "accepted", f"{unsteady[0]['reason']} ({short(unsteady[0]['sentry'])})"
    return "verified", f"verified by {len(rows)} sentries"
