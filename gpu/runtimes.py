"""All of a worker's runtimes behind one :class:`~gpu.runtime.Executor`, and who gets which GPU.

Each task is given ``spec.gpus`` of the offered GPUs for its run (only those are visible to
it, by ``CUDA_VISIBLE_DEVICES`` and device nodes); a CPU-only worker gives none.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from gpu.runtime import OnLog, OnSegment, RunResult, RunSpec


class Runtime(Protocol):
    kinds: frozenset[str]

    async def run(
        self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog, gpus: tuple[int, ...] = ()
    ) -> RunResult: ...


class Runtimes:
    def __init__(self, runtimes: list[Any], gpu_indices: list[int]) -> None:
        self.by_kind: dict[str, Runtime] = {k: r for r in runtimes for k in r.kinds}
        self.kinds = frozenset(self.by_kind)
        self.free, self.has_gpus = list(gpu_indices), bool(gpu_indices)

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult:
        runtime = self.by_kind.get(spec.workload.kind)
        if runtime is None:
            return RunResult(False, f"this worker has no {spec.workload.kind!r} runtime")
        wanted = spec.gpus if self.has_gpus else 0
        if wanted > len(self.free):  # the bidder never over-commits; refuse rather than share
            return RunResult(False, f"asked for {spec.gpus} GPUs, {len(self.free)} free")
        given, self.free = tuple(self.free[:wanted]), self.free[wanted:]
        try:
            return await runtime.run(spec, on_segment, on_log, given)
        finally:
            self.free = sorted([*self.free, *given])


def python_paths() -> tuple[Path, ...]:
    """What a Python runtime needs to read inside the jail: this environment and its base."""
    here = Path(__file__).resolve().parent
    return tuple(sorted({Path(sys.prefix), Path(sys.base_prefix), here}))
