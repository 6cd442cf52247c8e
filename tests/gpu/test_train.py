"""The train runtime: hashed, chained checkpoints that resumes and replays reproduce exactly.

Real PyTorch on the CPU in real child processes, in the sandbox; the example job in
``examples/train-tiny`` with few steps so the whole file runs in seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import psutil
import pytest
import trio

from consensus.market.messages import Workload
from consensus.verify.sampling import POINTS, choose_points, point_step
from gpu import train_child
from gpu.freezer import Freezer, descendants
from gpu.runtime import GENESIS, RunResult, RunSpec, SegmentDone, chain
from gpu.train import BadSegment, TrainRuntime, _Progress, file_hash, segment_steps
from tests.gpu.conftest import needs_bwrap, sandbox

pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytestmark = needs_bwrap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
PARAMS = {"lr": "0.01", "hidden": "16", "batch_size": "32", "precision": "fp32"}
WORKLOAD = Workload(kind="train", entry="train.py", steps=12, segments=4, seed=7, params=PARAMS)


class Run:
    """One run of the runtime in a fresh task dir, keeping copies of its checkpoints."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir, self.kept = root / name, root / f"{name}.kept"
        self.dir.mkdir(parents=True)
        self.kept.mkdir()
        shutil.copy(EXAMPLE, self.dir / "train.py")
        self.segments: list[SegmentDone] = []
        self.logs: list[str] = []

    async def on_segment(self, done: SegmentDone) -> None:
        shutil.copy(done.checkpoint, self.kept / f"seg-{done.index}.ckpt")
        self.segments.append(done)

    def checkpoint(self, index: int) -> Path:
        return self.kept / f"seg-{index}.ckpt"

    async def go(self, workload: Workload = WORKLOAD, **spec: object) -> RunResult:
        run_spec = RunSpec("t", workload, self.dir, **spec)  # type: ignore[arg-type]
        with trio.fail_after(120):
            result = await TrainRuntime(sandbox()).run(run_spec, self.on_segment, self.logs.append)
        assert result.ok, (result.error, self.logs[-10:])
        return result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One uninterrupted run, shared by the tests that compare against it."""
    run = Run(tmp_path_factory.mktemp("train"), "baseline")
    trio.run(run.go)
    return run


async def test_two_processes_produce_the_same_chain(tmp_path: Path, baseline: Run) -> None:
    again = Run(tmp_path, "again")
    result = await again.go()
    assert [s.hash for s in again.segments] == [s.hash for s in baseline.segments]
    assert [s.index for s in baseline.segments] == [0, 1, 2, 3]
    chained = GENESIS
    for done in baseline.segments:
        assert done.hash == file_hash(baseline.checkpoint(done.index))
        chained = chain(chained, done.hash)
        assert done.chained == chained
    assert result.result_hash == baseline.segments[-1].hash
    assert file_hash(again.dir / "model.ckpt") == result.result_hash
    assert any(line.startswith("segment 4/4: step 12, loss ") for line in again.logs)


async def test_a_run_paused_and_resumed_produces_the_same_chain(
    tmp_path: Path, baseline: Run
) -> None:
    """What a worker does when vouchers stop and come back: the training is frozen between
    two segments and goes on, and nothing in its checkpoints tells."""
    paused = Run(tmp_path, "paused")
    freezer = Freezer()
    first = trio.Event()
    keep = paused.on_segment

    async def on_segment(done: SegmentDone) -> None:
        await keep(done)
        if done.index == 0:
            freezer.freeze()
            first.set()

    paused.on_segment = on_segment  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(paused.go, freezer=freezer))
        with trio.fail_after(60):
            await first.wait()
            while not _all_stopped(freezer):
                freezer.sweep()  # as the worker's tick loop does while paused
                await trio.sleep(0.05)
        freezer.thaw()
    assert [(s.index, s.hash, s.chained) for s in paused.segments] == [
        (s.index, s.hash, s.chained) for s in baseline.segments
    ]


def _all_stopped(freezer: Freezer) -> bool:
    """Every process below the runs the freezer watches is stopped (and there is one)."""
    family = [p for pid in freezer.watched for p in descendants(pid)]
    try:
        return bool(family) and all(p.status() == psutil.STATUS_STOPPED for p in family)
    except psutil.Error:
        return False


async def test_resume_from_a_checkpoint_continues_the_same_chain(
    tmp_path: Path, baseline: Run
) -> None:
    resumed = Run(tmp_path, "resumed")
    one = baseline.segments[1]
    await resumed.go(resume=baseline.checkpoint(1), resume_index=1, resume_chained=one.chained)
    assert [(s.index, s.hash, s.chained) for s in resumed.segments] == [
        (s.index, s.hash, s.chained) for s in baseline.segments[2:]
    ]


async def test_replay_of_one_segment_reproduces_the_next_checkpoint(
    tmp_path: Path, baseline: Run
) -> None:
    verifier = Run(tmp_path, "verifier")
    spec = RunSpec("t", WORKLOAD, verifier.dir, baseline.checkpoint(0), 0)
    with trio.fail_after(60):
        replayed = await TrainRuntime(sandbox()).replay(spec, verifier.logs.append)
    assert replayed == baseline.segments[1].hash
    assert [line for line in verifier.logs if line.startswith("segment ")] == [
        line for line in verifier.logs if line.startswith("segment 2/4")
    ], "a replay runs that one segment only"


CHANGES = {
    "lr": {"params": {**PARAMS, "lr": "0.011"}},
    "precision": {"params": {**PARAMS, "precision": "fp64"}},
    "skipped-step": {"steps": 11},  # every segment boundary moves
}


async def test_any_change_changes_the_hashes(tmp_path: Path, baseline: Run) -> None:
    runs = {name: Run(tmp_path, name) for name in CHANGES}
    async with trio.open_nursery() as nursery:  # side by side: each run is mostly torch's import
        for name, change in CHANGES.items():
            nursery.start_soon(runs[name].go, replace(WORKLOAD, **change))  # type: ignore[arg-type]
    theirs = {s.hash for s in baseline.segments}
    for name, run in runs.items():
        assert len(run.segments) == 4
        assert not {s.hash for s in run.segments} & theirs, f"{name} left a hash unchanged"


async def test_a_bad_script_fails_with_the_reason(tmp_path: Path) -> None:
    run = Run(tmp_path, "bad")
    (run.dir / "train.py").write_text("def init(ctx):\n    pass\n")
    spec = RunSpec("t", WORKLOAD, run.dir)
    with trio.fail_after(60):
        result = await TrainRuntime(sandbox()).run(spec, run.on_segment, run.logs.append)
    assert not result.ok and run.segments == []
    assert any("train.py must define dataset, step" in line for line in run.logs), run.logs


async def test_a_checkpoint_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    """The workload could swap its checkpoint for a link to the node key before we hash it."""
    run = Run(tmp_path, "linked")
    (run.dir / ".idlegrid").mkdir()
    (tmp_path / "secret").write_bytes(b"key")
    (run.dir / ".idlegrid" / "seg-0.ckpt").symlink_to(tmp_path / "secret")
    progress = _Progress(RunSpec("t", WORKLOAD, run.dir), run.kept)
    with pytest.raises(BadSegment, match=r"refused: \.idlegrid/seg-0\.ckpt: .* is a symbolic link"):
        await progress.collect({"segment": 0, "file": ".idlegrid/seg-0.ckpt"})


async def test_a_run_hashes_its_inner_points_and_a_replay_stopped_there_matches(
    tmp_path: Path, baseline: Run
) -> None:
    """A run whose segments are not all sampled commits to 8 points in its first segment (3
    steps a segment here, so they repeat) and then as many as the measured cost says; a
    sentry's replay stopped at a point's step reproduces that point's hash."""
    assert [s.points for s in baseline.segments] == [()] * 4  # all 4 sampled: none
    run = Run(tmp_path, "pointed")
    spec = RunSpec("t", WORKLOAD, run.dir)
    with trio.fail_after(120):
        result = await TrainRuntime(sandbox(), sample=1).run(spec, run.on_segment, run.logs.append)
    assert result.ok, result.error
    counts = [len(s.points) + 1 for s in run.segments]
    assert counts[0] == POINTS["train"] and counts == sorted(counts, reverse=True), counts
    assert all(POINTS["train"] % c == 0 for c in counts), counts
    assert [s.hash for s in run.segments] == [s.hash for s in baseline.segments]
    assert all("points " in line for line in run.logs if line.startswith("segment "))
    begin, end = segment_steps(WORKLOAD.steps, WORKLOAD.segments, 0)
    verifier = Run(tmp_path, "verifier")
    replay = RunSpec("t", WORKLOAD, verifier.dir)
    for point in (3, 6):
        stop = point_step(begin, end, point, POINTS["train"])
        assert begin < stop < end
        with trio.fail_after(60):
            got = await TrainRuntime(sandbox()).replay(replay, verifier.logs.append, stop_step=stop)
        assert got == run.segments[0].points[point - 1]
    assert len(set(run.segments[0].points)) == 3  # steps 0, 1, 2 (3 is the end)


def test_the_child_weighs_points_as_the_rule_does() -> None:
    """The child repeats consensus.verify.sampling.choose_points (it imports no idlegrid)."""
    for cost in (0.0, 0.0005, 0.002, 0.007, 0.05):
        for segments in (2, 17, 18, 64, 256, 1024):
            for size in (1, 16):
                want = choose_points(cost, segments, size, 8)
                assert train_child.choose_points(cost, segments, size, 8) == want
