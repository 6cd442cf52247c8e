"""The checks to run on a machine with an NVIDIA GPU (none here): discovery, bench, train.

Run: ``.venv/bin/python bench/gpu_check.py`` (the same script passes on a CPU-only machine,
where it exercises the CPU paths and says so).

1. discovery through the real NVML: the profile, the offered class;
2. ``idlegrid gpu bench``'s measurement with seed 1, twice: the proof must repeat;
3. the train example on the GPU in the sandbox (``auto``: bwrap if it works, else limits),
   twice, plus a replay of segment 2 from checkpoint 1: the chains must agree bitwise.

Compared with nothing else in the run: ends with ``RESULT backend=... gpu_class=...
bench_proof_repeats=... train_chain_repeats=... replay_matches=...``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import trio

from consensus.market.messages import Workload
from gpu import bench
from gpu.devices import discover
from gpu.runtime import RunSpec, SegmentDone
from gpu.runtimes import python_paths
from gpu.sandbox import Limits, Sandbox
from gpu.train import TrainRuntime

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train-tiny" / "train.py"
WORKLOAD = Workload(kind="train", entry="train.py", steps=64, segments=4, seed=7,
                    params={"hidden": "256", "precision": "fp32"})  # fmt: skip


async def train_once(root: Path, name: str, gpus: tuple[int, ...], **resume: object) -> list[bytes]:
    workdir = root / name
    workdir.mkdir()
    shutil.copy(EXAMPLE, workdir)
    box = Sandbox.create("auto", Limits(memory_mb=65536), readonly=python_paths())
    hashes: list[bytes] = []

    async def keep(done: SegmentDone) -> None:
        hashes.append(done.hash)
        shutil.copy(done.checkpoint, root / f"{name}-seg-{done.index}.ckpt")

    spec = RunSpec(name, WORKLOAD, workdir, **resume)  # type: ignore[arg-type]
    result = await TrainRuntime(box).run(spec, keep, lambda line: print(f"  [{name}] {line}"))
    if not result.ok:
        raise SystemExit(f"train run {name} failed: {result.error}")
    return hashes


async def train_checks(gpus: tuple[int, ...]) -> tuple[bool, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = await train_once(root, "first", gpus)
        second = await train_once(root, "second", gpus)
        workdir = root / "replay"
        workdir.mkdir()
        shutil.copy(EXAMPLE, workdir)
        box = Sandbox.create("auto", Limits(memory_mb=65536), readonly=python_paths())
        spec = RunSpec("replay", WORKLOAD, workdir, root / "first-seg-1.ckpt", 1)
        replayed = await TrainRuntime(box).replay(spec, print, gpus)
    print(f"train chain: {[h.hex()[:16] for h in first]}")
    return first == second, replayed == first[2]


def main() -> None:
    profile = discover()
    print(json.dumps(profile.to_json(), indent=2))
    gpu_class = profile.offer()[0]
    runs = [bench.run(1), bench.run(1)]
    for result in runs:
        print(json.dumps(result.to_json()))
    gpus = tuple(g.index for g in profile.offered_gpus()[:1])
    chain_ok, replay_ok = trio.run(train_checks, gpus)
    print(f"RESULT backend={profile.backend} gpu_class={gpu_class} "
          f"bench_proof_repeats={runs[0].proof == runs[1].proof} "
          f"train_chain_repeats={chain_ok} replay_matches={replay_ok}")  # fmt: skip


if __name__ == "__main__":
    main()
