"""The ``train`` runtime: a PyTorch job driven in segments, each closed by a hashed checkpoint.

The child (:mod:`gpu.train_child`) runs the job's ``step`` function ``steps / segments`` times
per segment and writes the canonical state after each (weights, optimiser, RNG, data cursor).
Same job, same inputs, same determinism class (CPU or GPU model, library versions, thread
count): the same chain, whether the run was interrupted and resumed from checkpoint i, here or
on another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consensus.market.messages import Workload
from consensus.verify.bisection import bisectable
from consensus.verify.sampling import POINTS
from gpu.runtime import RunSpec
from gpu.segmented import BadSegment, SegmentedRuntime, _Progress, file_hash

__all__ = ["BadSegment", "TrainRuntime", "_Progress", "file_hash", "segment_steps"]


class TrainRuntime(SegmentedRuntime):
    kinds = frozenset({"train"})
    child = Path(__file__).resolve().parent / "train_child.py"
    points = POINTS["train"]

    def check(self, spec: RunSpec) -> str:
        workload = spec.workload
        if not (spec.workdir / workload.entry).is_file() or not workload.entry.endswith(".py"):
            return f"runtime.entry: {workload.entry!r} is not a Python script among the inputs"
        if workload.steps < workload.segments:
            return f"runtime.steps: {workload.steps} steps for {workload.segments} segments"
        return ""

    def child_args(self, spec: RunSpec) -> dict[str, Any]:
        workload = spec.workload
        return {"entry": workload.entry, "steps": workload.steps, "segments": workload.segments,
                "seed": workload.seed, "params": workload.params}  # fmt: skip

    def bisects(self, workload: Workload) -> bool:
        return bisectable(workload)  # one rule, which requesters and settlement read too

    def steps_of(self, workload: Workload, index: int) -> tuple[int, int]:
        return segment_steps(workload.steps, workload.segments, index)

    def child_env(self, spec: RunSpec) -> dict[str, str]:
        threads = spec.workload.params.get("threads", "1")
        return {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": threads}


def segment_steps(steps: int, segments: int, index: int) -> tuple[int, int]:
    """The global steps segment ``index`` runs from and to: ``train_child.main``'s boundaries
    (the child imports no idlegrid module, so it computes them itself)."""
    return index * steps // segments, (index + 1) * steps // segments
