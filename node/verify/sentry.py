"""The sentry service: follow attestations, draw the seed with the other assigned sentries,
challenge the worker, replay with the runtimes (sandboxed as a worker runs them), gossip a
signed verdict and keep its evidence.

Per attestation, one trio task: commit, reveal, play the game (:mod:`node.verify.play`),
publish. Verdicts from other sentries are recorded too, moving the worker's reputation.

A game that ends escalated (a cross-class miss) publishes an :class:`Escalation` instead of a
verdict. A sentry in the worker's determinism class that hears one replays the missed segments
bitwise and publishes a normal verdict (:mod:`node.verify.escalations`; who answers is
:mod:`consensus.verify.escalation`'s rule). Where the runtime can stop inside a segment, the
escalating sentry also bisects each missed segment with the worker down to one step and
publishes that verdict (:mod:`node.verify.bisector`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import trio

from config.schema import VerifySettings
from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.market.messages import TaskRef
from consensus.verify import escalation as esc
from consensus.verify import game as g
from consensus.verify import seed as sd
from consensus.verify.messages import (
    Attestation,
    ChallengeRequest,
    ChallengeResponse,
    Escalation,
    SeedCommit,
    SeedReveal,
    Verdict,
    attestation_id,
)
from consensus.verify.sampling import sample
from gpu.runtime import RunSpec
from node.market.datasets import NoRoom, using_all
from node.sweep import Throttle
from node.verify.bisector import Bisector
from node.verify.devices import ReplayDevices
from node.verify.escalations import INBOX_GRACE_MS, EscalationDesk
from node.verify.play import NO_STATE, play, replay_segment, stop_step, stops_of
from node.verify.task_files import ReplayFiles, from_worker
from node.verify.topics import (
    ATTESTS,
    CHALLENGE,
    CHALLENGE_MAX_BYTES,
    ESCALATIONS,
    SEEDS,
    VERDICTS,
)
from p2p.reqresp import RequestError
from storage.transfer_files import discard_tree

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.market.blobshare import BlobShare
    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
VERDICT_TTL_MS = 30 * 60_000
# How often the attestations' records are swept of what nothing needs any more: a minute of
# clock, so a sweep costs one pass per minute however many attestations the network makes.
SWEEP_MS = 60_000


class SlashFields(Protocol):
    """A failing verdict's slash fields (``node/verify/slashing.py``), or None."""

    def __call__(
        self, att: Attestation, att_id: bytes, *, bitwise: bool
    ) -> dict[str, Any] | None: ...


def task_key(ref: TaskRef) -> bytes:
    return ref.job_id + ref.task.to_bytes(4, "big") + ref.attempt.to_bytes(4, "big")


class Awaited(NamedTuple):
    """A task attempt attested and not yet judged, as settlement asks about it."""

    ref: TaskRef
    seen_ms: int  # when its first attestation arrived: the hold counts from there
    expires_ms: int  # the latest its attestations expire: until then one can arrive again


@dataclass
class Sentry:
    net: MarketNet
    store: VerifyStore
    share: BlobShare
    settings: VerifySettings
    runtimes: dict[str, Any]  # kind -> runtime
    sentries: Callable[[], list[str]]  # the sentries this node knows (itself included)
    devices: ReplayDevices  # the classes it replays in, and on which GPUs
    scratch: Path
    rounds: dict[bytes, sd.SeedRound] = field(default_factory=dict)
    # attestation ids taken up, once each -> when the attestation expires (gossip refuses it
    # after that, so it cannot come to be taken up again)
    judged: dict[bytes, int] = field(default_factory=dict)
    # task key -> its attestation, until a verdict on it arrives: settlement holds such a
    # task's payment (see holds()); then kept until nothing could hold it any more (_sweep)
    awaiting: dict[bytes, Awaited] = field(default_factory=dict)
    sweeps: Throttle = field(default_factory=lambda: Throttle(SWEEP_MS), init=False)
    changed: trio.Event = field(default_factory=trio.Event)
    # With chain settlement: a failing verdict's slash fields (node/verify/slashing.py).
    slash_signer: SlashFields | None = None
    desk: EscalationDesk = field(init=False)
    bisector: Bisector = field(init=False)

    def __post_init__(self) -> None:
        self.desk = EscalationDesk(self.net, self.store, self.settings, self.devices,
                                   self.sentries, self._answer, self._assigned)  # fmt: skip
        self.bisector = Bisector(self.net, self.share, self.settings, self.devices, self._files)

    def _assigned(self, att: Attestation) -> bool:
        """Whether this sentry judges ``att`` (the public rule: rendezvous over the task)."""
        count = self.settings.sentries_per_task
        return self.net.peer_id in sd.assigned(task_key(att.ref), self.sentries(), count)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        atts = await self.net.subscribe(ATTESTS, frozenset({Attestation.KIND}))
        seeds = await self.net.subscribe(SEEDS, frozenset({SeedCommit.KIND, SeedReveal.KIND}))
        verdicts = await self.net.subscribe(VERDICTS, frozenset({Verdict.KIND}))
        escalations = await self.net.subscribe(ESCALATIONS, frozenset({Escalation.KIND}))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_seeds, seeds)
            nursery.start_soon(self._follow_verdicts, verdicts)
            nursery.start_soon(self.desk.run, escalations, nursery)

            async def follow() -> None:
                async for msg in atts:
                    body = msg.opened.body
                    if isinstance(body, Attestation) and body.worker == msg.origin:
                        self.heard(body)
                        nursery.start_soon(self._judge_safely, body)
                        await self.desk.heard_attestation(body, nursery)

            nursery.start_soon(follow)
            task_status.started()

    def heard(self, att: Attestation) -> None:
        """Notes an attestation as awaiting its verdict (its first arrival counts), and sweeps
        the records now and then."""
        now, key = self.net.now_ms(), task_key(att.ref)
        known = self.awaiting.get(key)
        if known is None:
            self.awaiting[key] = Awaited(att.ref, now, att.expires_ms)
        elif att.expires_ms > known.expires_ms:
            self.awaiting[key] = known._replace(expires_ms=att.expires_ms)
        if self.sweeps.due(now):
            self._sweep(now)

    def _sweep(self, now: int) -> None:
        """Forgets attestations nothing can need: taken-up ids once gossip refuses them, and
        awaited attempts once settlement no longer holds them (:meth:`holds`) and no
        attestation of them can still arrive (one would otherwise start a new hold)."""
        gone = [i for i, expires in self.judged.items() if expires + INBOX_GRACE_MS <= now]
        for att_id in gone:
            del self.judged[att_id]
        for key in [k for k, a in self.awaiting.items() if self._kept_until(a) <= now]:
            del self.awaiting[key]

    def _kept_until(self, awaited: Awaited) -> int:
        """Until when ``awaited`` matters: past its hold, also past the longest bisection
        hold an escalation heard later could still give it (counted from when it was
        heard), and past its attestation's expiry."""
        s = self.settings
        longest = awaited.seen_ms + s.verdict_timeout_ms + s.bisect_timeout_ms
        return max(self._hold_until(awaited), longest, awaited.expires_ms + INBOX_GRACE_MS)

    def _hold_until(self, awaited: Awaited) -> int:
        verdict_ms = self.settings.verdict_timeout_ms
        return max(awaited.seen_ms + verdict_ms, self.desk.bisect_until.get(awaited.ref, 0))

    async def holds(self, ref: TaskRef) -> bool:
        """Whether settlement must not pay this task attempt (yet): a sentry failed it, or it
        was attested and no verdict has come within the requester's verdict timeout (after
        which the requester accepts it unverified, and so does settlement), or the bisection
        timeout after it when an escalation of it will be bisected."""
        if await self.store.failed(ref):
            return True
        awaited = self.awaiting.get(task_key(ref))
        return awaited is not None and self.net.now_ms() < self._hold_until(awaited)

    async def _follow_seeds(self, inbox: Any) -> None:
        async for msg in inbox:
            body, now = msg.opened.body, self.net.now_ms()
            live = self.rounds.get(body.attestation)
            if live is None:
                continue
            try:
                if isinstance(body, SeedCommit):
                    live.commit(msg.origin, body.commitment, now)
                elif isinstance(body, SeedReveal):
                    live.reveal(msg.origin, body.secret, now)
            except Invalid as exc:
                log.info("seed share refused", extra={"from": msg.origin, "error": str(exc)})
            self.changed.set()

    async def _follow_verdicts(self, inbox: Any) -> None:
        async for msg in inbox:
            verdict = msg.opened.body
            if isinstance(verdict, Verdict) and not self._ignored(verdict, msg.origin):
                self.awaiting.pop(task_key(verdict.ref), None)
                self.desk.verdict_heard(verdict.attestation)
                await self.store.add_verdict(
                    verdict.attestation,
                    msg.origin,
                    verdict,
                    msg.opened.raw,
                    evidence=None,
                    now_ms=self.net.now_ms(),
                )

    def _ignored(self, verdict: Verdict, sentry: str) -> bool:
        """Whether another's verdict is dropped: anyone can gossip one, and a pass ends
        settlement's hold on a task while a fail holds its pay for good. Only a known
        sentry's counts (with chain settlement, one staked as a sentry: ``sentries``), never
        the judged worker's."""
        if sentry != verdict.worker and sentry in self.sentries():
            return False
        why = "not by a known sentry other than the worker"
        log.info("verdict not counted", extra={"task": verdict.ref.text(), "sentry": sentry,
                                               "why": why})  # fmt: skip
        return True

    async def _judge_safely(self, att: Attestation) -> None:
        """One judgement; its failure (a runtime that breaks, a bug) is logged, and the other
        judgements and the node go on."""
        att_id = attestation_id(att)
        if att_id in self.judged:
            return
        self.judged[att_id] = att.expires_ms
        try:
            await self.judge(att)
        except NoRoom as exc:  # ours, not the worker's: no verdict rather than a wrong one
            log.warning("cannot judge", extra={"task": att.ref.text(), "error": str(exc)})
        except Exception:
            log.exception("judging failed", extra={"task": att.ref.text()})
        finally:
            self.rounds.pop(att_id, None)

    async def judge(self, att: Attestation) -> None:
        att_id, me = attestation_id(att), self.net.peer_id
        assigned = sd.assigned(task_key(att.ref), self.sentries(), self.settings.sentries_per_task)
        if me not in assigned or att.workload is None:
            return
        runtime = self.runtimes.get(att.runtime)
        if runtime is None:
            log.warning("cannot judge: no runtime", extra={"runtime": att.runtime})
            return
        seed = await self._seed(att_id, assigned)
        sampled = sample(seed, att.segments, self.settings.sample_size, att.first)
        deadline = self.net.now_ms() + self.settings.challenge_deadline_ms
        same_class = self.devices.same_class(att.det_class)
        stops = stops_of(att, seed, sampled) if same_class else {}
        game = g.Game(att, att_id, sampled, deadline, same_class, self.settings.tolerance_ppm,
                      stops=stops)  # fmt: skip
        log.info("judging", extra={"task": att.ref.text(), "worker": att.worker, "first": att.first,
                                   "sampled": ",".join(map(str, sampled)), "points": att.points,
                                   "stops": ",".join(str(stops.get(i, att.points))
                                                     for i in sampled)})  # fmt: skip
        decision = await self._play(att, att_id, runtime, game, att_id.hex()[:16])
        if isinstance(decision, g.Escalate):
            await self.desk.escalate(att, att_id, sampled, seed, decision)
            settled = await self._bisect(att, att_id, runtime, decision)
            if settled is not None:
                await self._publish(att, att_id, sampled, seed, settled)
            return
        await self._publish(att, att_id, sampled, seed, decision)

    async def _bisect(
        self, att: Attestation, att_id: bytes, runtime: Any, up: g.Escalate
    ) -> g.Decide | None:
        """The bisection's verdict on an escalated game (:mod:`node.verify.bisector`), or
        None (the runtime does not bisect; our own replay failed): the escalation decides."""
        assert att.workload is not None
        datasets = None if self.share is None else self.share.datasets
        work = self.scratch / f"{att_id.hex()[:16]}-bisect"
        async with using_all(datasets, att.workload):
            return await self.bisector.settle(att, att_id, runtime, up, work)

    async def _files(self, att: Attestation, att_id: bytes, index: int) -> ChallengeResponse | None:
        """Segment ``index``'s answer with its start and end files in it, for a bisection."""
        answer = await self._ask(att, att_id, index, with_end=True)
        return None if answer is None else await self._complete(att, answer)

    async def _play(
        self, att: Attestation, att_id: bytes, runtime: Any, game: g.Game, workname: str
    ) -> g.Decide | g.Escalate:
        work = self.scratch / workname
        # the end files only where a distance is measured: across classes, by a runtime that
        # has one (exec has none; its "checkpoint" is the state hash itself, not a file)
        with_end = not game.same_class and hasattr(runtime, "distance")
        assert att.workload is not None
        # One fetch of the task's datasets for the whole game; then they expire in time.
        datasets = None if self.share is None else self.share.datasets
        files = ReplayFiles(self.share, att, work, [att.worker])
        try:
            async with using_all(datasets, att.workload):
                return await play(
                    game,
                    lambda i: self._ask(att, att_id, i, with_end=with_end),
                    lambda i, start, end, stop: self._replay(
                        att, runtime, files, i, start, end=end, stop=stop
                    ),
                    self.net.now_ms,
                    lambda answer: self._complete(att, answer),
                )
        finally:
            await discard_tree(work)

    async def _answer(self, att: Attestation, up: Escalation) -> None:
        """Replays the escalated segments bitwise, as a sentry of the worker's class, and
        publishes a normal verdict on them (seed and sampled as the escalation says)."""
        runtime = self.runtimes.get(att.runtime)
        if runtime is None or att.workload is None:
            log.warning("cannot answer: no runtime", extra={"runtime": att.runtime})
            return
        att_id = up.attestation
        deadline = self.net.now_ms() + self.settings.challenge_deadline_ms
        game = esc.second_game(att, att_id, up, deadline, self.settings.tolerance_ppm)
        shown = ",".join(map(str, game.sampled))
        log.info("answering escalation", extra={"task": att.ref.text(), "sampled": shown})
        decision = await self._play(att, att_id, runtime, game, f"{att_id.hex()[:16]}-second")
        assert isinstance(decision, g.Decide), "a same-class game never escalates"
        reason = esc.answer_reason(up, decision)
        decision = g.Decide(decision.passed, reason, decision.evidence, decision.grounds)
        await self._publish(att, att_id, game.sampled, up.seed, decision)

    async def _seed(self, att_id: bytes, assigned: list[str]) -> bytes:
        now, me = self.net.now_ms(), self.net.peer_id
        commit_until = now + self.settings.commit_window_ms
        live = sd.SeedRound(
            att_id, assigned, commit_until, commit_until + self.settings.reveal_window_ms
        )
        self.rounds[att_id] = live
        secret = os.urandom(32)
        commitment = sd.commitment(att_id, me, secret)
        live.commit(me, commitment, now)
        await self.net.publish(
            SEEDS,
            SeedCommit(
                expires_ms=now + VERDICT_TTL_MS,
                nonce=new_nonce(),
                attestation=att_id,
                commitment=commitment,
            ),
        )
        await trio.sleep((commit_until + 1 - self.net.now_ms()) / 1000)
        live.reveal(me, secret, self.net.now_ms())
        await self.net.publish(
            SEEDS,
            SeedReveal(
                expires_ms=self.net.now_ms() + VERDICT_TTL_MS,
                nonce=new_nonce(),
                attestation=att_id,
                secret=secret,
            ),
        )
        while not live.ready(self.net.now_ms()):
            with trio.move_on_after((live.reveal_until_ms + 1 - self.net.now_ms()) / 1000):
                await self.changed.wait()
            self.changed = trio.Event()
        for other in live.withheld():  # could choose between two seeds by staying silent
            log.warning("seed reveal withheld",
                        extra={"sentry": other, "attestation": att_id.hex()})  # fmt: skip
            await self.store.missed(other, self.net.now_ms())
        return live.seed()

    async def _ask(
        self, att: Attestation, att_id: bytes, index: int, *, with_end: bool
    ) -> ChallengeResponse | None:
        """The worker's answer for ``index`` (with its end file for a cross-class replay to
        measure against), or None: refused, silent or malformed."""
        request = ChallengeRequest(ref=att.ref, attestation=att_id, index=index, with_end=with_end)
        try:
            reply = await self.net.request(
                att.worker,
                att.listen,
                CHALLENGE,
                {"request": to_wire(request)},
                timeout_s=self.settings.challenge_deadline_ms / 1000,
                max_bytes=CHALLENGE_MAX_BYTES,
            )
            return from_wire(ChallengeResponse, reply, "response")
        except (RequestError, Invalid) as exc:
            log.info("challenge unanswered", extra={"task": att.ref.text(), "error": str(exc)})
            return None

    async def _complete(
        self, att: Attestation, answer: ChallengeResponse
    ) -> ChallengeResponse | None:
        """``answer`` with the files it sent by reference fetched into it (from the worker
        alone, whatever holders it named), or None: it did not serve them."""
        files: dict[str, bytes] = {}
        refs = {"checkpoint": answer.checkpoint_blob, "end_checkpoint": answer.end_blob}
        answer_s = self.settings.challenge_deadline_ms / 1000
        for name, ref in refs.items():
            if ref is None:
                continue
            path = await from_worker(self.share, att, ref, answer_s)
            if path is None:
                return None
            files[name] = await trio.to_thread.run_sync(path.read_bytes)
        return replace(answer, checkpoint_blob=None, end_blob=None, **files)  # type: ignore[arg-type]

    async def _replay(
        self,
        att: Attestation,
        runtime: Any,
        files: ReplayFiles,
        index: int,
        start: bytes,
        *,
        end: bytes,
        stop: int = 0,
    ) -> tuple[bytes, int | None]:
        workdir = files.work / f"seg-{index}"
        try:
            return await self._replay_in(runtime, files, workdir, index, start, end=end, stop=stop)
        finally:  # one segment's tree at a time, not one per sample
            await discard_tree(workdir)

    async def _replay_in(
        self,
        runtime: Any,
        files: ReplayFiles,
        workdir: Path,
        index: int,
        start: bytes,
        *,
        end: bytes,
        stop: int = 0,
    ) -> tuple[bytes, int | None]:
        att = files.att
        assert att.workload is not None
        if not await files.put(workdir):
            return NO_STATE, None
        spec = RunSpec(f"verify {att.ref.text()}", att.workload, workdir)
        gpus = self.devices.gpus(att.det_class)
        return await replay_segment(runtime, spec, index, start, lambda _line: None, gpus=gpus,
                                    end=end, stop_step=stop_step(att, index, stop))  # fmt: skip

    def _slash_fields(self, att: Attestation, att_id: bytes, decision: g.Decide) -> dict[str, Any]:
        if decision.passed or self.slash_signer is None:
            return {}
        bitwise = esc.slashable(decision, self.devices.same_class(att.det_class))
        return self.slash_signer(att, att_id, bitwise=bitwise) or {}

    async def _publish(
        self, att: Attestation, att_id: bytes, sampled: list[int], seed: bytes, decision: g.Decide
    ) -> None:
        verdict = Verdict(
            expires_ms=self.net.now_ms() + VERDICT_TTL_MS,
            nonce=new_nonce(),
            ref=att.ref,
            worker=att.worker,
            attestation=att_id,
            passed=decision.passed,
            sampled=sampled,
            seed=seed,
            evidence=g.evidence_hash(decision.evidence),
            reason=decision.reason[:200],
            **self._slash_fields(att, att_id, decision),
        )
        await self.store.add_verdict(
            att_id,
            self.net.peer_id,
            verdict,
            self.net.seal(verdict),
            evidence=decision.evidence,
            now_ms=self.net.now_ms(),
        )
        await self.net.publish(VERDICTS, verdict)
        log.info(
            "verdict",
            extra={
                "task": att.ref.text(),
                "worker": att.worker,
                "passed": decision.passed,
                "reason": decision.reason,
            },
        )
