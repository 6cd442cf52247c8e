"""The render runtime: Cycles tiles as hashed, chained checkpoints that repeat exactly.

Real Blender (``bpy``) in real child processes in the sandbox, on the tiny scene of
``examples/render-scene``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import trio

from consensus.market.messages import Workload
from gpu.render import RenderRuntime
from gpu.runtime import GENESIS, RunResult, RunSpec, SegmentDone, chain
from gpu.train import file_hash
from tests.gpu.conftest import needs_bpy, needs_bwrap, sandbox

pytestmark = [needs_bpy, needs_bwrap]

SCENE = Path(__file__).resolve().parents[2] / "examples" / "render-scene" / "scene.py"
WORKLOAD = Workload(kind="render", entry="scene.py", frames="1-2", seed=1,
                    params={"samples": "8", "tiles": "2x1"})  # fmt: skip


class Run:
    def __init__(self, root: Path, name: str) -> None:
        self.dir, self.kept = root / name, root / f"{name}.kept"
        self.dir.mkdir(parents=True)
        self.kept.mkdir()
        shutil.copy(SCENE, self.dir / "scene.py")
        self.segments: list[SegmentDone] = []
        self.logs: list[str] = []

    async def on_segment(self, done: SegmentDone) -> None:
        shutil.copy(done.checkpoint, self.kept / f"seg-{done.index}.ckpt")
        self.segments.append(done)

    async def go(self, workload: Workload = WORKLOAD, **spec: object) -> RunResult:
        run_spec = RunSpec("r", workload, self.dir, **spec)  # type: ignore[arg-type]
        with trio.fail_after(120):
            result = await RenderRuntime(sandbox()).run(run_spec, self.on_segment, self.logs.append)
        assert result.ok, (result.error, self.logs[-10:])
        return result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = Run(tmp_path_factory.mktemp("render"), "baseline")
    trio.run(run.go)
    return run


async def test_tiles_repeat_bitwise_and_chain(tmp_path: Path, baseline: Run) -> None:
    again = Run(tmp_path, "again")
    result = await again.go()
    assert [s.hash for s in again.segments] == [s.hash for s in baseline.segments]
    assert len(baseline.segments) == 4 and result.result_hash == baseline.segments[-1].hash
    chained = GENESIS
    for done in baseline.segments:
        chained = chain(chained, done.hash)
        assert done.chained == chained
        assert done.hash == file_hash(baseline.kept / f"seg-{done.index}.ckpt")
    fmt, frame, tile, width, height, channels, pixels = msgpack.unpackb(
        (baseline.kept / "seg-3.ckpt").read_bytes()
    )
    assert (fmt, frame, tile, width, height, channels) == ("idlegrid.render/1", 2, 1, 24, 32, 4)
    assert len(pixels) == width * height * channels * 4 and max(pixels) > 0, "a black tile"
    outputs = sorted(p.name for p in (again.dir / "out").iterdir())
    assert outputs == [f"frame-000{f}-tile-{t}.exr" for f in (1, 2) for t in (0, 1)]


async def test_resume_and_replay_reproduce_the_chain(tmp_path: Path, baseline: Run) -> None:
    one = baseline.segments[1]
    resumed = Run(tmp_path, "resumed")
    await resumed.go(resume_index=1, resume_chained=one.chained)
    assert [(s.index, s.chained) for s in resumed.segments] == [
        (s.index, s.chained) for s in baseline.segments[2:]
    ]
    verifier = Run(tmp_path, "verifier")
    spec = RunSpec("v", WORKLOAD, verifier.dir, baseline.kept / "seg-1.ckpt", 1)
    with trio.fail_after(60):
        replayed = await RenderRuntime(sandbox()).replay(spec, verifier.logs.append)
    assert replayed == baseline.segments[2].hash


async def test_seed_or_samples_change_every_tile(tmp_path: Path, baseline: Run) -> None:
    changes = {"seed": {"seed": 2},
               "samples": {"params": {**WORKLOAD.params, "samples": "9"}}}  # fmt: skip
    runs = {name: Run(tmp_path, name) for name in changes}
    async with trio.open_nursery() as nursery:
        for name, change in changes.items():
            nursery.start_soon(runs[name].go, replace(WORKLOAD, **change))  # type: ignore[arg-type]
    theirs = {s.hash for s in baseline.segments}
    for name, run in runs.items():
        assert not {s.hash for s in run.segments} & theirs, f"{name} left a tile unchanged"


async def test_bad_tiles_parameter_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path, "bad")
    bad = replace(WORKLOAD, params={"tiles": "3by2"})
    result = await RenderRuntime(sandbox()).run(RunSpec("r", bad, run.dir), run.on_segment,
                                                run.logs.append)  # fmt: skip
    assert not result.ok
    assert result.error == "params.tiles: expected COLUMNSxROWS like 2x2, got '3by2'"
