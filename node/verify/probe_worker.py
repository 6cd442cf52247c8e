"""The worker's side of a bisection: its state inside a segment of a task it attested.

A sentry whose cross-class replay missed a segment asks for the worker's state after a step
inside it (:mod:`consensus.verify.bisection`). The worker replays the segment from its own
kept checkpoint with its runtime, sandboxed as the task ran, stops at that step, and answers
with the state file (as a blob granted to that sentry) under a signed :class:`ProbeState`.

Answering costs a replay of up to one segment, so: only a known sentry is answered, one
probe replays at a time (the others wait their turn), and one sentry gets at most as many
answers per segment as a bisection of it needs (log2 of its steps, and one more). Those
counts are kept for the :data:`ANSWERED_KEPT` segments probed last.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from blake3 import blake3

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import from_wire
from consensus.verify.messages import Attestation, ProbeRequest, ProbeState, attestation_id
from gpu.runtime import RunSpec
from node.verify.play import replay_to
from node.verify.task_files import prepare
from node.verify.topics import ATTESTATION_TTL_MS, PROBE, PROBE_TIMEOUT_S
from p2p.reqresp import RequestRejected
from storage.transfer_files import discard_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare
    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
# (attestation, sentry, segment) answer counts kept, the first probed first to go. Bisections
# are rare and short (one key each per missed segment); a sentry whose count went could get
# a second bisection's answers, but only after making us replay this many other segments.
ANSWERED_KEPT = 4096


@dataclass
class ProbeAnswerer:
    net: MarketNet
    store: VerifyStore
    share: BlobShare
    runtimes: dict[str, Any]  # kind -> runtime
    gpus: Callable[[str], tuple[int, ...]]  # determinism class -> the GPUs to replay on
    scratch: Path
    is_sentry: Callable[[str], bool]
    lock: trio.Lock = field(default_factory=trio.Lock)
    answered: OrderedDict[tuple[bytes, str, int], int] = field(default_factory=OrderedDict)

    def register(self) -> None:
        self.net.serve(PROBE, self._on_probe, max_bytes=1 << 16, timeout_s=PROBE_TIMEOUT_S)

    async def _on_probe(self, peer: str, payload: Any) -> Any:
        try:
            raw = payload.get("request") if isinstance(payload, dict) else None
            req = from_wire(ProbeRequest, raw, "request")
        except Invalid as exc:
            raise RequestRejected("malformed", str(exc)) from None
        if not self.is_sentry(peer):
            raise RequestRejected("unauthorized", "probes are answered to known sentries")
        att, start, runtime, needed = await self._attested(req)
        key = (req.attestation, peer, req.index)
        count = self.answered.get(key, 0)
        if count > needed:
            raise RequestRejected("limit", f"{needed + 1} probes of this segment answered")
        self.answered[key] = count + 1
        while len(self.answered) > ANSWERED_KEPT:
            self.answered.popitem(last=False)
        kept = self.scratch / f"probe-{os.urandom(8).hex()}.ckpt"  # two sentries, one step
        try:
            async with self.lock:
                await self._replay(att, runtime, req, start, kept)
            digest = blake3(await trio.to_thread.run_sync(kept.read_bytes)).digest()
            blob = await self.share.put(kept)
        finally:
            kept.unlink(missing_ok=True)
        self.share.grant(peer, blob.hash)
        answer = ProbeState(
            expires_ms=self.net.now_ms() + ATTESTATION_TTL_MS,
            nonce=new_nonce(),
            ref=req.ref,
            attestation=req.attestation,
            index=req.index,
            step=req.step,
            hash=digest,
            blob=blob,
        )
        log.info("probe answered",
                 extra={"task": req.ref.text(), "segment": req.index, "step": req.step,
                        "sentry": peer})  # fmt: skip
        return {"state": self.net.seal(answer)}

    async def _attested(self, req: ProbeRequest) -> tuple[Attestation, bytes, Any, int]:
        """Our attestation the probe names, the segment's starting checkpoint file, the
        runtime and how many probes a bisection of the segment needs; or the refusal."""
        kept = await self.store.attested(req.ref)
        if kept is None:
            raise RequestRejected("not_found", "no attestation of ours for that task")
        att = from_wire(Attestation, msgpack.unpackb(kept[0]))
        runtime = self.runtimes.get(att.runtime)
        if attestation_id(att) != req.attestation or not att.first <= req.index < att.segments:
            raise RequestRejected("invalid", "another attestation, or no such segment")
        if att.workload is None or runtime is None or not _bisects(runtime, att):
            raise RequestRejected("invalid", f"a {att.runtime} task has no states inside a segment")
        first, last = runtime.steps_of(att.workload, req.index)
        if not first < req.step < last:
            raise RequestRejected("invalid", f"step {req.step} not inside {first}..{last}")
        needed = (last - first - 1).bit_length()
        if req.index == 0:
            return att, b"", runtime, needed
        segments, offset = kept[1], max(0, att.first - 1)
        blob = segments[req.index - 1 - offset][1]
        try:
            start = await trio.to_thread.run_sync(self.share.read_plain, blob)
        except FileNotFoundError:
            raise RequestRejected("unavailable", "that segment's checkpoint is gone") from None
        return att, start, runtime, needed

    async def _replay(
        self, att: Attestation, runtime: Any, req: ProbeRequest, start: bytes, kept: Path
    ) -> None:
        assert att.workload is not None
        work = kept.with_suffix("")
        try:
            try:
                ready = await prepare(self.share, att, work, [])
            except OSError as exc:  # NoRoom among them: ours, said plainly, no traceback
                raise RequestRejected("unavailable", f"this worker's disk: {exc}") from None
            if not ready:
                raise RequestRejected("unavailable", "the task's files are no longer here")
            spec = RunSpec(f"probe {att.ref.text()}", att.workload, work)
            gpus = self.gpus(att.det_class)
            ok = await replay_to(runtime, spec, req.index, start, req.step, keep_as=kept,
                                 on_log=lambda _line: None, gpus=gpus)  # fmt: skip
        finally:
            await discard_tree(work)
        if not ok:
            raise RequestRejected("unavailable", f"the replay to step {req.step} failed")


def _bisects(runtime: Any, att: Attestation) -> bool:
    bisects = getattr(runtime, "bisects", None)  # exec has no states inside a segment
    return att.workload is not None and bisects is not None and bool(bisects(att.workload))
