"""The worker's side of a bisection: its state inside a segment of a task it attested.

A sentry whose cross-class replay missed a segment asks for the worker's state after a step
inside it (:mod:`consensus.verify.bisection`). The worker replays the segment from its own
kept checkpoint with its runtime, sandboxed as the task ran, stops at that step, and answers
with the state file (as a blob granted to that sentry) under a signed :class:`ProbeState`.

Answering costs a replay of up to one segment, so: one probe replays at a time (the others
wait their turn), and one sentry gets at most :data:`MAX_PROBES_PER_SENTRY` answers per
attestation (a bisection needs log2 of the segment's steps per missed segment).
"""

from __future__ import annotations

import logging
from collections import Counter
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
from storage.transfer_files import remove_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare
    from node.market.net import MarketNet
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)
MAX_PROBES_PER_SENTRY = 64  # a bisection of 2^20 steps in each of three missed segments


@dataclass
class ProbeAnswerer:
    net: MarketNet
    store: VerifyStore
    share: BlobShare
    runtimes: dict[str, Any]  # kind -> runtime
    gpus: Callable[[str], tuple[int, ...]]  # determinism class -> the GPUs to replay on
    scratch: Path
    lock: trio.Lock = field(default_factory=trio.Lock)
    answered: Counter[tuple[bytes, str]] = field(default_factory=Counter)

    def register(self) -> None:
        self.net.serve(PROBE, self._on_probe, max_bytes=1 << 16, timeout_s=PROBE_TIMEOUT_S)

    async def _on_probe(self, peer: str, payload: Any) -> Any:
        try:
            raw = payload.get("request") if isinstance(payload, dict) else None
            req = from_wire(ProbeRequest, raw, "request")
        except Invalid as exc:
            raise RequestRejected("malformed", str(exc)) from None
        att, start, runtime = await self._attested(req)
        if self.answered[(req.attestation, peer)] >= MAX_PROBES_PER_SENTRY:
            raise RequestRejected("limit", f"{MAX_PROBES_PER_SENTRY} probes of this task answered")
        self.answered[(req.attestation, peer)] += 1
        async with self.lock:
            state = await self._replay(att, runtime, req, start)
        blob = await self.share.put(state)
        self.share.grant(peer, blob.hash)
        answer = ProbeState(
            expires_ms=self.net.now_ms() + ATTESTATION_TTL_MS,
            nonce=new_nonce(),
            ref=req.ref,
            attestation=req.attestation,
            index=req.index,
            step=req.step,
            hash=blake3(await trio.to_thread.run_sync(state.read_bytes)).digest(),
            blob=blob,
        )
        state.unlink(missing_ok=True)
        log.info("probe answered",
                 extra={"task": req.ref.text(), "segment": req.index, "step": req.step,
                        "sentry": peer})  # fmt: skip
        return {"state": self.net.seal(answer)}

    async def _attested(self, req: ProbeRequest) -> tuple[Attestation, bytes, Any]:
        """Our attestation the probe names, the segment's starting checkpoint file, and the
        runtime; or the refusal."""
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
        if req.index == 0:
            return att, b"", runtime
        segments, offset = kept[1], max(0, att.first - 1)
        blob = segments[req.index - 1 - offset][1]
        return att, await trio.to_thread.run_sync(self.share.read_plain, blob), runtime

    async def _replay(
        self, att: Attestation, runtime: Any, req: ProbeRequest, start: bytes
    ) -> Path:
        assert att.workload is not None
        name = f"probe-{req.attestation.hex()[:16]}-{req.step}"
        work, kept = self.scratch / name, self.scratch / f"{name}.ckpt"
        try:
            if not await prepare(self.share, att, work, []):
                raise RequestRejected("unavailable", "the task's files are no longer here")
            spec = RunSpec(f"probe {att.ref.text()}", att.workload, work)
            gpus = self.gpus(att.det_class)
            ok = await replay_to(runtime, spec, req.index, start, req.step, keep_as=kept,
                                 on_log=lambda _line: None, gpus=gpus)  # fmt: skip
        finally:
            remove_tree(work)
        if not ok:
            raise RequestRejected("unavailable", f"the replay to step {req.step} failed")
        return kept


def _bisects(runtime: Any, att: Attestation) -> bool:
    bisects = getattr(runtime, "bisects", None)  # exec has no states inside a segment
    return att.workload is not None and bisects is not None and bool(bisects(att.workload))
