"""A worker that fakes its work, for tests: selected by ``worker.executor_wrapper``.

It runs nothing: it writes a made-up answer where the outputs go and reports the hash of that,
as a worker that wants to be paid without computing would. A segmented (train) task gets a
made-up checkpoint for every segment it was to run, from its resume point on. Everything else
(bidding, metering, the attestation, answering challenges) is the real worker's code.
"""

from __future__ import annotations

from typing import Any

import trio
from blake3 import blake3

from gpu.runtime import GENESIS, OnLog, OnSegment, RunResult, RunSpec, SegmentDone, chain, tree_hash

PRETEND_S = 2.0


class FakingExecutor:
    def __init__(self, inner: Any) -> None:
        self.inner, self.kinds = inner, inner.kinds

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult:
        if spec.workload.kind == "train":
            return await self._fake_segments(spec, on_segment, on_log)
        out = spec.workdir / "out"
        out.mkdir(exist_ok=True)
        (out / "answer.txt").write_text("made up\n")
        state = tree_hash(spec.workdir, list(spec.workload.outputs))
        checkpoint = spec.workdir.parent / f"{spec.workdir.name}.fake-state"
        checkpoint.write_bytes(state)
        await trio.sleep(PRETEND_S)  # as long as a real run, so it has been vouched for
        on_log("done (not really)")
        await on_segment(SegmentDone(0, state, chain(GENESIS, state), 1, checkpoint))
        return RunResult(True, result_hash=state)

    async def _fake_segments(
        self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog
    ) -> RunResult:
        chained, state = spec.resume_chained, b""
        for index in range(spec.resume_index + 1, spec.workload.segments):
            checkpoint = spec.workdir.parent / f"{spec.workdir.name}.fake-{index}"
            checkpoint.write_bytes(f"made-up state {index}".encode())
            state = blake3(checkpoint.read_bytes()).digest()
            chained = chain(chained, state)
            await trio.sleep(PRETEND_S / spec.workload.segments)
            await on_segment(SegmentDone(index, state, chained, 1, checkpoint))
        for name in spec.workload.outputs:
            (spec.workdir / name).write_bytes(b"made up\n")
        on_log("trained (not really)")
        return RunResult(True, result_hash=state)


def wrap(executor: Any) -> FakingExecutor:
    return FakingExecutor(executor)
