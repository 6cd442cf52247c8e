"""How a job is cut into tasks, and what each task's winner is told to run."""

from __future__ import annotations

from consensus.market.messages import Workload
from consensus.market.spec import JobSpec, frame_range


def workload_for(spec: JobSpec, task: int) -> Workload:
    """Task ``task``'s share of the job: its frames for a frame split, its shard otherwise."""
    runtime = spec.runtime
    frames, shard, shards = runtime.frames, 0, 1
    if spec.split == "frames":
        first, last = frame_range(runtime.frames or "1")
        lo, hi = split_range(first, last, spec.tasks, task)
        frames = f"{lo}-{hi}"
    elif spec.split in ("shards", "tiles"):
        shard, shards = task, spec.tasks
    return Workload(
        kind=spec.kind,
        entry=runtime.entry,
        command=list(runtime.command),
        segments=runtime.segments,
        steps=runtime.steps,
        frames=frames,
        shard=shard,
        shards=shards,
        seed=runtime.seed,
        params=dict(runtime.params),
        outputs=list(spec.outputs),
        network=spec.network,
        datasets={name: bytes.fromhex(d) for name, d in spec.datasets.items()},
    )


def split_range(first: int, last: int, parts: int, index: int) -> tuple[int, int]:
    """The ``index``-th of ``parts`` near-equal consecutive pieces of ``first..last``."""
    count = last - first + 1
    start = first + index * count // parts
    end = first + (index + 1) * count // parts - 1
    return start, end


def task_estimate_s(spec: JobSpec) -> int:
    """A task's share of the job's estimated seconds (at least one)."""
    return max(1, spec.runtime.estimate_s // spec.tasks)
