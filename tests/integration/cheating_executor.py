"""A worker that fakes its work, for tests: selected by ``worker.executor_wrapper``.

It runs nothing: it writes a made-up answer where the outputs go and reports the hash of that,
as a worker that wants to be paid without computing would. Everything else (bidding, metering,
the attestation, answering challenges) is the real worker's code.
"""

from __future__ import annotations

from typing import Any

import trio

from gpu.runtime import GENESIS, OnLog, OnSegment, RunResult, RunSpec, SegmentDone, chain, tree_hash

PRETEND_S = 2.0


class FakingExecutor:
    def __init__(self, inner: Any) -> None:
        self.inner, self.kinds = inner, inner.kinds

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult:
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


def wrap(executor: Any) -> FakingExecutor:
    return FakingExecutor(executor)
