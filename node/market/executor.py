"""How a worker runs a task: the interface the market drives (defined in :mod:`gpu.runtime`).

The worker service hands an :class:`Executor` a :class:`RunSpec` and gets finished segments and
log lines back, then a :class:`RunResult`. The node's executor is :class:`gpu.runtimes.Runtimes`
(exec and train in a sandbox); tests drive the market with simulated executors.
"""

from gpu.freezer import SWEEP_MS, Freezer
from gpu.runtime import (
    GENESIS,
    Executor,
    OnLog,
    OnSegment,
    RunResult,
    RunSpec,
    SegmentDone,
    chain,
    run_logged,
    tree_hash,
)

__all__ = [
    "GENESIS",
    "SWEEP_MS",
    "Executor",
    "Freezer",
    "OnLog",
    "OnSegment",
    "RunResult",
    "RunSpec",
    "SegmentDone",
    "chain",
    "run_logged",
    "tree_hash",
]
