"""The train runtime stopped inside a segment: what a bisection of a cross-class miss replays.

Real PyTorch on the CPU in the sandbox. "Another class" is torch's kernels pinned to an
older instruction set, as in ``test_distance.py``. Prints the one-step distances it measures
(``-s`` shows them): they are what ``verify.step_tolerance_ppm``'s default rests on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from config.schema import VerifySettings
from consensus.market.messages import Workload
from gpu.runtime import RunSpec, SegmentDone
from gpu.segmented import SegmentedRuntime
from node.verify.play import replay_to
from tests.gpu.conftest import needs_bwrap, sandbox

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from gpu import train_child as tc  # noqa: E402 - needs torch
from gpu.train import TrainRuntime, segment_steps  # noqa: E402

pytestmark = needs_bwrap

ENTRY = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
PARAMS = {"lr": "0.01", "hidden": "16", "batch_size": "32", "precision": "fp32"}
TRAIN = Workload(kind="train", entry="train.py", steps=40, segments=2, seed=7, params=PARAMS)
STEP_TOLERANCE = VerifySettings().step_tolerance_ppm


class OtherClass(TrainRuntime):
    def child_env(self, spec: RunSpec) -> dict[str, str]:
        return {**super().child_env(spec), "ATEN_CPU_CAPABILITY": "default"}


def workdir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    shutil.copy(ENTRY, path / "train.py")
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The two segments' state files of one uninterrupted run."""
    files: list[bytes] = []

    async def keep(done: SegmentDone) -> None:
        files.append(done.checkpoint.read_bytes())

    async def go() -> None:
        work = workdir(tmp_path_factory.mktemp("train"), "worker")
        with trio.fail_after(120):
            result = await TrainRuntime(sandbox()).run(RunSpec("t", TRAIN, work), keep, print)
        assert result.ok, result.error

    trio.run(go)
    return files


async def state(runtime: SegmentedRuntime, root: Path, start: bytes, step: int) -> bytes:
    """Segment 1's state after global ``step``, replayed from ``start``."""
    name = f"r{len(list(root.iterdir()))}"
    kept = root / f"{name}.ckpt"
    with trio.fail_after(60):
        spec = RunSpec("t", TRAIN, workdir(root, name))
        assert await replay_to(runtime, spec, 1, start, step, keep_as=kept, on_log=print)
    return kept.read_bytes()


async def distance(root: Path, replayed: bytes, claimed: bytes, *, moved: bool = False) -> int:
    """As a bisection measures: random states compared, unless it is how far a step moved."""
    (root / "replayed.ckpt").write_bytes(replayed)
    with trio.fail_after(60):
        ppm = await TrainRuntime(sandbox()).measure(root / "d", root / "replayed.ckpt", claimed,
                                                    print, rng=not moved, moved=moved)  # fmt: skip
    assert ppm is not None, "the measuring child ran"
    return ppm


def packed(state: dict[str, object]) -> bytes:
    return bytes(tc.msgpack.packb(tc._canon(state), default=tc._pack_tensor, use_bin_type=True))


async def test_stopping_inside_a_segment_and_going_on_reproduces_it_bit_for_bit(
    tmp_path: Path, checkpoints: list[bytes]
) -> None:
    assert segment_steps(40, 2, 1) == (20, 40)
    runtime = TrainRuntime(sandbox())
    at_27 = await state(runtime, tmp_path, checkpoints[0], 27)
    assert tc.decode_state(at_27)["step"] == 27
    assert await state(runtime, tmp_path, at_27, 40) == checkpoints[1]
    assert not (tmp_path / "r0" / "model.ckpt").exists(), "a probe is not the job's result"


async def test_one_step_across_classes_is_near_and_a_skipped_step_is_not(
    tmp_path: Path, checkpoints: list[bytes]
) -> None:
    ours, theirs = TrainRuntime(sandbox()), OtherClass(sandbox())
    at_27 = await state(ours, tmp_path, checkpoints[0], 27)
    at_28 = await state(ours, tmp_path, at_27, 28)
    one_step = await distance(tmp_path, await state(theirs, tmp_path, at_27, 28), at_28)
    skipped = tc.decode_state(at_27)
    honest = tc.decode_state(at_28)
    skipped["step"], skipped["cursor"], skipped["rng"] = 28, honest["cursor"], honest["rng"]
    one_skipped = await distance(tmp_path, at_28, packed(skipped))
    moved = await distance(tmp_path, at_28, at_27, moved=True)
    print(f"one step across classes: {one_step} ppm; skipped: {one_skipped}; moved: {moved}")
    assert one_step <= STEP_TOLERANCE < one_skipped
    assert one_skipped == moved, "a skipped step is off by all of its move"
    honest["rng"]["torch"] = torch.zeros_like(honest["rng"]["torch"])
    assert await distance(tmp_path, at_28, packed(honest)) == tc.FAR, "another random state"


async def test_a_step_outside_the_segment_fails_the_replay(
    tmp_path: Path, checkpoints: list[bytes]
) -> None:
    with trio.fail_after(60):
        spec = RunSpec("t", TRAIN, workdir(tmp_path, "w"))
        kept = tmp_path / "k.ckpt"
        assert not await replay_to(TrainRuntime(sandbox()), spec, 1, checkpoints[0], 41,
                                   keep_as=kept, on_log=print)  # fmt: skip
