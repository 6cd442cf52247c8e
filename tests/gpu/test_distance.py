"""A cross-class replay's distance, measured by the runtimes' children in the sandbox.

Real PyTorch (and Blender, when installed) on the CPU. "Another class" is torch's kernels
pinned to an older instruction set (``ATEN_CPU_CAPABILITY=default``), which this CPU can
produce; a cheat is a state from other work (no steps, fewer samples) or a tampered one.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from config.schema import VerifySettings
from consensus.market.messages import Workload
from gpu.render import RenderRuntime
from gpu.runtime import RunSpec, SegmentDone
from gpu.segmented import FAR, SegmentedRuntime
from node.verify.play import replay_segment
from tests.gpu.conftest import needs_bpy, needs_bwrap, sandbox

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from gpu import train_child as tc  # noqa: E402 - needs torch
from gpu.train import TrainRuntime  # noqa: E402

pytestmark = needs_bwrap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOLERANCE = VerifySettings().tolerance_ppm
PARAMS = {"lr": "0.01", "hidden": "16", "batch_size": "32", "precision": "fp32"}
TRAIN = Workload(kind="train", entry="train.py", steps=80, segments=4, seed=7, params=PARAMS)


class OtherClass(TrainRuntime):
    def child_env(self, spec: RunSpec) -> dict[str, str]:
        return {**super().child_env(spec), "ATEN_CPU_CAPABILITY": "default"}


async def run(runtime: SegmentedRuntime, workload: Workload, work: Path) -> list[bytes]:
    files: list[bytes] = []

    async def keep(done: SegmentDone) -> None:
        files.append(done.checkpoint.read_bytes())

    logs: list[str] = []
    with trio.fail_after(120):
        result = await runtime.run(RunSpec("t", workload, work), keep, logs.append)
    assert result.ok, (result.error, logs[-10:])
    return files


def task_dir(root: Path, name: str, entry: Path) -> Path:
    path = root / name
    path.mkdir()
    shutil.copy(entry, path / entry.name)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("train")
    work = task_dir(root, "worker", EXAMPLES / "train-tiny" / "train.py")
    return trio.run(run, TrainRuntime(sandbox()), TRAIN, work)


async def measure(
    runtime: SegmentedRuntime, tmp_path: Path, replayed: bytes, claimed: bytes
) -> int:
    (tmp_path / "replayed.ckpt").write_bytes(replayed)
    with trio.fail_after(60):
        return await runtime.distance(tmp_path / "d", tmp_path / "replayed.ckpt", claimed, print)


def reencoded(state: dict[str, object]) -> bytes:
    import msgpack  # noqa: PLC0415

    return bytes(msgpack.packb(tc._canon(state), default=tc._pack_tensor, use_bin_type=True))


async def test_an_honest_replay_in_another_class_is_within_tolerance(
    tmp_path: Path, trained: list[bytes]
) -> None:
    work = task_dir(tmp_path, "sentry", EXAMPLES / "train-tiny" / "train.py")
    state, distance = await replay_segment(
        OtherClass(sandbox()), RunSpec("t", TRAIN, work), 2, trained[1], print, end=trained[2]
    )
    assert state != bytes(32)
    assert distance is not None and distance <= TOLERANCE, distance
    assert not list(tmp_path.glob("sentry.*")), "the start, end and distance files are gone"


async def test_skipped_steps_and_tampered_weights_are_over_tolerance(
    tmp_path: Path, trained: list[bytes]
) -> None:
    runtime = TrainRuntime(sandbox())
    honest, skipped = tc.decode_state(trained[2]), tc.decode_state(trained[1])
    skipped["step"], skipped["cursor"] = honest["step"], honest["cursor"]  # forged bookkeeping
    assert await measure(runtime, tmp_path, trained[2], reencoded(skipped)) > TOLERANCE
    for name, value in honest["model"].items():
        honest["model"][name] = value * 1.01 if name.endswith("weight") else value
    tampered = await measure(runtime, tmp_path, trained[2], reencoded(honest))
    assert 9_000 <= tampered <= 11_000, "1 % off the weights is about 10000 ppm"
    assert await measure(runtime, tmp_path, trained[2], trained[2]) == 0


async def test_a_garbage_or_unlike_file_is_infinitely_far(
    tmp_path: Path, trained: list[bytes]
) -> None:
    runtime = TrainRuntime(sandbox())
    assert await measure(runtime, tmp_path, trained[2], b"\x00garbage" * 100) == FAR
    other = tc.decode_state(trained[2])
    other["model"]["0.weight"] = other["model"]["0.weight"][:, :4]  # another shape
    assert await measure(runtime, tmp_path, trained[2], reencoded(other)) == FAR
    assert tc.distance_ppm(trained[2], trained[3])[0] == FAR, "another step"


def test_the_distance_compares_structure_and_values() -> None:
    state = {"format": tc.FORMAT, "step": 3, "cursor": [0, 96], "rng": {},
             "model": {"w": torch.ones(4)}, "optimizer": {"lr": 0.01}}  # fmt: skip
    near = {**state, "model": {"w": torch.ones(4) * 1.0001}, "rng": {"torch": torch.zeros(2)}}
    ppm, where = tc.distance_ppm(reencoded(near), reencoded(state))
    assert 100 <= ppm <= 101 and where == "[0].w", "1e-4 relative, float32 rounding"
    for change in ({"optimizer": {"lr": 0.02}}, {"model": {"v": torch.ones(4)}},
                   {"model": {"w": torch.ones(4, dtype=torch.float64)}},
                   {"model": {"w": torch.tensor([1.0, 1, 1, float("nan")])}}):  # fmt: skip
        assert tc.distance_ppm(reencoded({**state, **change}), reencoded(state))[0] == FAR, change


RENDER = Workload(kind="render", entry="scene.py", frames="1", seed=1,
                  params={"samples": "4", "tiles": "2x1", "threads": "1"})  # fmt: skip


@needs_bpy
async def test_render_tiles_with_fewer_samples_or_garbage_are_over_tolerance(
    tmp_path: Path,
) -> None:
    runtime = RenderRuntime(sandbox())
    tiles = await run(
        runtime, RENDER, task_dir(tmp_path, "worker", EXAMPLES / "render-scene" / "scene.py")
    )
    cheap = replace(RENDER, params={**RENDER.params, "samples": "1"})
    work = task_dir(tmp_path, "sentry", EXAMPLES / "render-scene" / "scene.py")
    fewer = (await run(runtime, cheap, work))[1]
    assert await measure(runtime, tmp_path, tiles[1], tiles[1]) == 0
    assert TOLERANCE < await measure(runtime, tmp_path, tiles[1], fewer) < FAR
    garbage = tiles[1][:64] + bytes(len(tiles[1]) - 64)
    assert await measure(runtime, tmp_path, tiles[1], garbage) > TOLERANCE
    assert await measure(runtime, tmp_path, tiles[1], tiles[0]) == FAR, "another tile"
