"""The sentry's side of a bisection: a cross-class miss narrowed to one step, then judged.

When a sentry's game ends escalated (its replays in another determinism class missed the
tolerance on some segments) and the task's runtime can stop inside a segment, the sentry
does not leave the outcome to chance (a sentry of the worker's class that may not exist): it
plays :class:`consensus.verify.bisection.Bisection` on each missed segment. Each probe asks
the worker for its signed state after a step (``verify/probe``, answered by
:mod:`node.verify.probe_worker`) and replays to that step itself; at one step apart it runs
that step from the worker's own state. The escalation still goes out: a same-class sentry's
bitwise verdict is the stronger one, and counts as well.

Our own trouble (a replay of ours that fails, the task's files not fetched) gives no verdict
rather than a wrong one, as in the game.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from blake3 import blake3

from config.schema import VerifySettings
from consensus.codec import encode
from consensus.errors import Invalid
from consensus.kinds import to_wire
from consensus.market.messages import BlobRef
from consensus.verify import bisection as b
from consensus.verify import game as g
from consensus.verify.messages import Attestation, ChallengeResponse, ProbeRequest, ProbeState
from gpu.runtime import RunSpec
from node.verify.devices import ReplayDevices
from node.verify.play import replay_to
from node.verify.task_files import ReplayFiles, from_worker
from node.verify.topics import PROBE, PROBE_TIMEOUT_S
from p2p.reqresp import RequestError
from storage.transfer_files import discard_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
# The segment's files again, with its end file: (attestation, its id, segment) -> the answer
Ask = Callable[[Attestation, bytes, int], Awaitable[ChallengeResponse | None]]


@dataclass
class _Segment:
    """One missed segment being bisected, and the worker's state files by global step."""

    att: Attestation
    att_id: bytes
    runtime: Any
    index: int
    work: Path
    states: dict[int, bytes]
    files: ReplayFiles  # the task's files, its datasets written once for every probe


@dataclass
class Bisector:
    net: MarketNet
    share: BlobShare
    settings: VerifySettings
    devices: ReplayDevices
    ask: Ask

    async def settle(
        self, att: Attestation, att_id: bytes, runtime: Any, up: g.Escalate, work: Path
    ) -> g.Decide | None:
        """The verdict on an escalated game, or None: the runtime does not bisect this
        workload, or our own replay failed. A fail on the first missed segment that fails;
        a pass when every missed segment's step check passed."""
        bisects = getattr(runtime, "bisects", None)
        if att.workload is None or bisects is None or not bisects(att.workload):
            return None
        mine = self.devices.replay_class(att.det_class)
        if not b.same_generators(att.det_class, mine):
            log.info("not bisected: other random generators",
                     extra={"task": att.ref.text(), "worker_class": att.det_class,
                            "replay_class": mine})  # fmt: skip
            return None
        passes: list[g.Decide] = []
        files = ReplayFiles(self.share, att, work, [att.worker])
        try:
            for miss in up.misses:
                decision = await self._segment(att_id, runtime, miss.index, files)
                if decision is None or not decision.passed:
                    return decision
                passes.append(decision)
        finally:
            await discard_tree(work)
        reason = "; ".join(d.reason for d in passes)  # "unverifiable: ..." for an unsteady job
        evidence = encode({"att": att_id, "bisections": [d.evidence for d in passes]})
        unsteady = any(d.grounds == "unsteady" for d in passes)
        return g.Decide(True, reason, evidence, "unsteady" if unsteady else "replays")

    async def _segment(
        self, att_id: bytes, runtime: Any, index: int, files: ReplayFiles
    ) -> g.Decide | None:
        att, work = files.att, files.work
        assert att.workload is not None
        answer = await self.ask(att, att_id, index)
        if answer is None or (problem := g.check_answer(att, answer)):
            why = "not given again" if answer is None else problem
            reason = f"segment {index}: its checkpoints for bisection: {why}"
            grounds: g.Grounds = "unprobed" if answer is None else "answer"
            return g.Decide(False, reason, encode({"att": att_id, "reason": reason}), grounds)
        first, last = runtime.steps_of(att.workload, index)
        if last - first < 1 or not answer.end_checkpoint:
            return None  # no steps to bisect, or a worker that predates the end file
        start_hash = answer.before.hash if answer.before is not None else bytes(32)
        bis = b.Bisection(att_id, index, first, last, start_hash, answer.after.hash,
                          self.settings.tolerance_ppm,
                          self.settings.step_tolerance_ppm)  # fmt: skip
        seg = _Segment(att, att_id, runtime, index, work,
                       {first: answer.checkpoint, last: answer.end_checkpoint}, files)  # fmt: skip
        log.info("bisecting", extra={"task": att.ref.text(), "segment": index,
                                     "steps": f"{first}..{last}"})  # fmt: skip
        effects = bis.start()
        while True:
            [effect] = effects
            if isinstance(effect, g.Decide):
                return effect
            if isinstance(effect, b.Probe):
                event = await self._probe(seg, effect.step, first)
            else:
                event = await self._check(seg, effect)
            if event is None:
                return None
            effects = bis.handle(event)

    async def _probe(self, seg: _Segment, step: int, first: int) -> b.Event | None:
        """The worker's state after ``step`` against ours, replayed from the segment's
        (agreed) start."""
        got = await self._worker_state(seg, step)
        if isinstance(got, str):
            return b.Unanswered(step, got)
        claimed, data, signed = got
        seg.states[step] = data
        mine = await self._replay(seg, seg.states[first], step)
        if mine is None:
            return None
        ppm = await self._distance(seg, mine, data)
        return None if ppm is None else b.Probed(step, claimed.hash, ppm, signed)

    async def _check(self, seg: _Segment, check: b.CheckStep) -> b.Event | None:
        """One step from the worker's own state at ``lo`` against its state at ``hi``."""
        mine = await self._replay(seg, seg.states[check.lo], check.hi)
        if mine is None:
            return None
        off = await self._distance(seg, mine, seg.states[check.hi])
        moved = await self._distance(seg, mine, seg.states[check.lo], moved=True)
        if off is None or moved is None:
            return None
        return b.Stepped(blake3(mine).digest(), off, moved)

    async def _worker_state(
        self, seg: _Segment, step: int
    ) -> tuple[ProbeState, bytes, bytes] | str:
        """The worker's signed state after ``step``, its file and the sealed envelope, or
        why not."""
        att = seg.att
        request = ProbeRequest(ref=att.ref, attestation=seg.att_id, index=seg.index, step=step)
        try:
            reply = await self.net.request(
                att.worker,
                att.listen,
                PROBE,
                {"request": to_wire(request)},
                timeout_s=self._timeout_s(att),
                max_bytes=1 << 16,
            )
            raw = reply.get("state") if isinstance(reply, dict) else None
            body = self.net.open(raw, att.worker).body
            assert isinstance(raw, bytes), "opened: an envelope's bytes"
        except (RequestError, Invalid) as exc:
            return str(exc)
        if not isinstance(body, ProbeState) or (
            body.ref,
            body.attestation,
            body.index,
            body.step,
        ) != (att.ref, seg.att_id, seg.index, step):
            self.net.blame(att.worker, "a probe answered with another probe's state")
            return "answered with another probe's state"
        data = await self._fetch(att, body.blob)
        if data is None:
            return "its state file not served"
        if blake3(data).digest() != body.hash:
            return "its state file does not hash to its signed hash"
        return body, data, raw

    async def _fetch(self, att: Attestation, ref: BlobRef) -> bytes | None:
        path = await from_worker(self.share, att, ref, self.settings.challenge_deadline_ms / 1000)
        return None if path is None else await trio.to_thread.run_sync(path.read_bytes)

    async def _replay(self, seg: _Segment, start: bytes, step: int) -> bytes | None:
        """Our own state after ``step``, replayed from ``start`` in a fresh copy of the
        task's files; None (logged) when it could not be made."""
        att = seg.att
        assert att.workload is not None
        workdir, kept = seg.work / "task", seg.work / "state.ckpt"
        try:
            if not await seg.files.put(workdir):
                return None
            spec = RunSpec(f"bisect {att.ref.text()}", att.workload, workdir)
            gpus = self.devices.gpus(att.det_class)
            ok = await replay_to(seg.runtime, spec, seg.index, start, step, keep_as=kept,
                                 on_log=lambda _line: None, gpus=gpus)  # fmt: skip
            if not ok:
                log.warning("bisection replay failed", extra={"task": att.ref.text(), "step": step})
                return None
            return await trio.to_thread.run_sync(kept.read_bytes)
        finally:
            await discard_tree(workdir)
            kept.unlink(missing_ok=True)

    async def _distance(
        self, seg: _Segment, mine: bytes, claimed: bytes, *, moved: bool = False
    ) -> int | None:
        """Ours against the worker's, random states included (``moved``: how far a step
        moved a state: weights only); None when the measuring child failed (ours)."""
        replayed = seg.work / "replayed.ckpt"
        await trio.to_thread.run_sync(replayed.write_bytes, mine)
        try:
            ppm: int | None = await seg.runtime.measure(
                seg.work / "distance", replayed, claimed, lambda _line: None,
                rng=not moved, moved=moved,
            )  # fmt: skip
        finally:
            replayed.unlink(missing_ok=True)
        if ppm is None:
            log.warning("bisection distance not measured", extra={"task": seg.att.ref.text()})
        return ppm

    def _timeout_s(self, att: Attestation) -> float:
        """How long a worker may take on one probe: its answer deadline and a minute (its
        sandbox, the runtime's start, another sentry's probe before ours), plus three times a
        segment's metered time (it replays up to one segment), at most PROBE_TIMEOUT_S."""
        per_segment_s = att.seconds / max(1, att.segments - att.first)
        deadline_s = self.settings.challenge_deadline_ms / 1000 + 60
        return min(PROBE_TIMEOUT_S, deadline_s + 3 * per_segment_s)
