"""A worker that skips one optimiser step of a train task, for tests: ``worker.executor_wrapper``.

It runs the real train runtime on the task's script with one step made a no-op (the
``SKIPPED_STEP``-th, counting from 1), so its checkpoints from there on are not the job's.
Everything else is the real worker: it attests those checkpoints, answers challenges from
them, and answers a bisection's probes with its runtime's honest replays (it cannot know
which states a sentry will ask for). Its states then stop agreeing with one step of its own
at the end of the segment: what the bisection finds.
"""

from __future__ import annotations

from typing import Any

from gpu.runtime import OnLog, OnSegment, RunResult, RunSpec

SKIPPED_STEP = 14
NO_OP_STEP = f"""

_the_step = step


def step(ctx, model, optimizer, batch):
    if ctx.step == {SKIPPED_STEP - 1}:  # ctx.step counts from 0
        return torch.zeros(())
    return _the_step(ctx, model, optimizer, batch)
"""


class SkippingExecutor:
    def __init__(self, inner: Any) -> None:
        self.inner, self.kinds = inner, inner.kinds

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult:
        if spec.workload.kind == "train":
            script = spec.workdir / spec.workload.entry
            script.write_text(script.read_text() + NO_OP_STEP)
        result: RunResult = await self.inner.run(spec, on_segment, on_log)
        return result


def wrap(executor: Any) -> SkippingExecutor:
    return SkippingExecutor(executor)
