"""Calibrates ``verify.tolerance_ppm``: cross-class distances of honest replays against cheats.

Run: ``.venv/bin/python bench/tolerance.py [--segments 8] [--steps-per-segment 100]``

A worker runs each task (``examples/train-tiny``, ``examples/render-scene`` when ``bpy`` is
installed) through the real runtime in the sandbox. For a few segments ``i``, a sentry in
another class replays ``i`` from the worker's checkpoint ``i-1`` and the runtime's own
``distance`` mode (the one the sentry uses) measures it against the worker's checkpoint ``i``.
A real GPU is not here, so "another class" is what this CPU can produce, each stated for what
it is: torch's vectorised kernels pinned to an older instruction set (``ATEN_CPU_CAPABILITY``,
as on a CPU without AVX-512), MKL's compatible code path (``MKL_CBWR``), 2 threads instead of
1, and ``torch.set_float32_matmul_precision("medium")`` (on a GPU: TF32 matmuls; on this CPU
possibly nothing). Cheats start from the same checkpoint ``i-1`` and are measured against the
honest checkpoint ``i`` with the same distance, after forging the bookkeeping (step, data
cursor, RNG, dtypes) to the honest values, so only the numbers can give them away; without
that forgery each of them is "infinite" (1000000 ppm) already.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import torch
import trio

from consensus.market.messages import Workload
from gpu import train_child as tc  # the child's own state codec, to forge cheats
from gpu.render import RenderRuntime
from gpu.runtime import RunSpec, SegmentDone
from gpu.runtimes import python_paths
from gpu.sandbox import Limits, Sandbox
from gpu.train import TrainRuntime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAR = 1_000_000


class Classed(TrainRuntime):
    """The train runtime with extra environment for the child: another numeric class."""

    def __init__(self, box: Sandbox, env: dict[str, str]) -> None:
        super().__init__(box)
        self.env = env

    def child_env(self, spec: RunSpec) -> dict[str, str]:
        return {**super().child_env(spec), **self.env}


MEDIUM = """import runpy, sys, torch
torch.set_float32_matmul_precision("medium")
runpy.run_path({child!r}, run_name="__main__")
"""


class MediumMatmul(TrainRuntime):
    """The train child with ``torch.set_float32_matmul_precision("medium")`` first (a wrapper
    written to ``folder``, which the sandbox must let the child read)."""

    def __init__(self, box: Sandbox, folder: Path) -> None:
        super().__init__(box)
        self.child = folder / "medium_child.py"
        self.child.write_text(MEDIUM.format(child=str(TrainRuntime.child)))


@dataclass
class Lab:
    root: Path
    made: int = 0

    def dir(self, inputs: tuple[Path, ...]) -> Path:
        self.made += 1
        path = self.root / f"w{self.made}"
        path.mkdir()
        for source in inputs:
            shutil.copy(source, path / source.name)
        return path

    async def run(self, runtime: Any, workload: Workload, inputs: tuple[Path, ...]) -> list[bytes]:
        files: list[bytes] = []
        logs: list[str] = []

        async def keep(done: SegmentDone) -> None:
            files.append(done.checkpoint.read_bytes())

        result = await runtime.run(RunSpec("cal", workload, self.dir(inputs)), keep, logs.append)
        if not result.ok:
            raise RuntimeError(f"run failed: {result.error}: {logs[-5:]}")
        return files

    async def replay(self, runtime: Any, workload: Workload, inputs: tuple[Path, ...],
                     start: bytes, start_index: int) -> bytes:  # fmt: skip
        """The state file of segment ``start_index + 1`` replayed from ``start``."""
        workdir = self.dir(inputs)
        resume, kept = (
            workdir.parent / f"{workdir.name}.start",
            workdir.parent / f"{workdir.name}.end",
        )
        resume.write_bytes(start)
        logs: list[str] = []
        spec = RunSpec("cal", workload, workdir, resume if start else None, start_index)
        await runtime.replay(spec, logs.append, keep_as=kept)
        return kept.read_bytes()

    async def distance(self, runtime: Any, replayed: bytes, claimed: bytes) -> int:
        path = self.root / f"r{self.made}.ckpt"
        self.made += 1
        path.write_bytes(replayed)
        logs: list[str] = []
        return int(await runtime.distance(self.root / f"d{self.made}", path, claimed, logs.append))


# --- forging (what a careful cheat would do to hide the bookkeeping) -------------------------


def forge(cheat: bytes, honest: bytes) -> bytes:
    """``cheat``'s tensors (cast to the honest dtypes) with ``honest``'s step, cursor and RNG."""
    got, want = tc.decode_state(cheat), tc.decode_state(honest)
    for part in ("model", "optimizer"):
        want[part] = _cast_like(got[part], want[part])
    return bytes(msgpack.packb(tc._canon(want), default=tc._pack_tensor, use_bin_type=True))


def _cast_like(value: Any, like: Any) -> Any:
    if isinstance(like, torch.Tensor):
        return value.to(like.dtype)
    if isinstance(like, dict):
        return {k: _cast_like(value[k], like[k]) for k in like}
    if isinstance(like, list):
        return [_cast_like(v, w) for v, w in zip(value, like, strict=True)]
    return like


def noisy(honest: bytes, relative: float, seed: int) -> bytes:
    """``honest`` with Gaussian noise of ``relative`` norm added to every float tensor."""
    state = tc.decode_state(honest)
    generator = torch.Generator().manual_seed(seed)

    def add(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            scale = relative * value.norm() / max(float(noise.norm()), 1e-12)
            return value + noise * scale
        if isinstance(value, dict):
            return {k: add(v) for k, v in value.items()}
        if isinstance(value, list):
            return [add(v) for v in value]
        return value

    state["model"], state["optimizer"] = add(state["model"]), add(state["optimizer"])
    return bytes(msgpack.packb(tc._canon(state), default=tc._pack_tensor, use_bin_type=True))


def skipped(start: bytes, honest: bytes) -> bytes:
    """No step run: the start state, claiming the honest step and cursor."""
    return forge(start, honest)


# --- the measurements --------------------------------------------------------------------------


async def train(lab: Lab, box: Sandbox, args: argparse.Namespace) -> dict[str, list[int]]:
    n, k = args.segments, args.steps_per_segment
    params = {"hidden": "16", "batch_size": "32", "lr": "0.01", "precision": "fp32"}
    work = Workload(kind="train", entry="train.py", steps=n * k, segments=n, seed=7, params=params)
    inputs = (EXAMPLES / "train-tiny" / "train.py",)
    base = TrainRuntime(box)
    files = await lab.run(base, work, inputs)
    picked = sorted({1, n // 2, n - 1})
    classes: dict[str, tuple[Any, Workload]] = {
        "class: ATEN_CPU_CAPABILITY=default": (
            Classed(box, {"ATEN_CPU_CAPABILITY": "default"}),
            work,
        ),
        "class: ATEN_CPU_CAPABILITY=avx2": (Classed(box, {"ATEN_CPU_CAPABILITY": "avx2"}), work),
        "class: MKL_CBWR=COMPATIBLE": (Classed(box, {"MKL_CBWR": "COMPATIBLE"}), work),
        "class: 2 threads": (base, replace(work, params={**params, "threads": "2"})),
        "class: matmul precision medium": (MediumMatmul(box, lab.root), work),
    }
    out: dict[str, list[int]] = {}
    for label, (runtime, workload) in classes.items():
        out[label] = []
        for i in picked:
            got = await lab.replay(runtime, workload, inputs, files[i - 1], i - 1)
            out[label].append(await lab.distance(base, got, files[i]))
    cheats: dict[str, Any] = {}
    for i in picked:
        start, honest = files[i - 1], files[i]
        for label, change in (("bf16", {"precision": "bf16"}), ("fp16", {"precision": "fp16"}),
                              ("batch 8", {"batch_size": "8"})):  # fmt: skip
            cheat = await lab.replay(base, replace(work, params={**params, **change}), inputs,
                                     start, i - 1)  # fmt: skip
            cheats.setdefault(f"cheat: {label} (forged)", []).append(forge(cheat, honest))
            cheats.setdefault(f"cheat: {label} (as run)", []).append(cheat)
        half = await lab.replay(base, replace(work, segments=2 * n), inputs, start, 2 * i - 1)
        cheats.setdefault("cheat: half the steps (forged)", []).append(forge(half, honest))
        cheats.setdefault("cheat: no steps (forged)", []).append(skipped(start, honest))
        for rel in (1e-3, 1e-4):
            cheats.setdefault(f"cheat: noise {rel:g} of the norm", []).append(noisy(honest, rel, i))
        cheats.setdefault("garbage file", []).append(b"\x92\x01" + bytes(len(honest) - 2))
    for label, made in cheats.items():
        out[label] = [
            await lab.distance(base, files[i], c) for i, c in zip(picked, made, strict=True)
        ]
    return out


async def render(lab: Lab, box: Sandbox) -> dict[str, list[int]]:
    params = {"samples": "4", "tiles": "2x2", "threads": "1"}
    work = Workload(kind="render", entry="scene.py", frames="1", seed=1, params=params)
    inputs = (EXAMPLES / "render-scene" / "scene.py",)
    base = RenderRuntime(box)
    files = await lab.run(base, work, inputs)
    out: dict[str, list[int]] = {}
    variants = {
        "class: 2 threads": {"threads": "2"},
        "cheat: 2 samples": {"samples": "2"},
        "cheat: 1 sample": {"samples": "1"},
        "cheat: another seed": {},
    }
    for label, change in variants.items():
        workload = replace(work, params={**params, **change})
        if label == "cheat: another seed":
            workload = replace(workload, seed=2)
        out[label] = []
        for i in range(1, len(files)):
            got = await lab.replay(base, workload, inputs, files[i - 1], i - 1)
            out[label].append(await lab.distance(base, got, files[i]))
    import numpy as np  # noqa: PLC0415 - the bench's own dependency, as the child's

    out["cheat: noise 1% per pixel"] = []
    for i in range(1, len(files)):
        frame = msgpack.unpackb(files[i], raw=False)
        pixels = np.frombuffer(frame[6], dtype="<f4")
        noise = np.random.default_rng(i).normal(0, 0.01, pixels.size).astype("<f4")
        frame[6] = (pixels * (1 + noise)).astype("<f4").tobytes()
        out["cheat: noise 1% per pixel"].append(
            await lab.distance(base, files[i], msgpack.packb(frame, use_bin_type=True))
        )
    return out


def show(name: str, table: dict[str, list[int]]) -> None:
    print(f"\n{name}: distance in ppm per replayed segment (max)")
    for label, values in table.items():
        shown = ", ".join("inf" if v >= FAR else str(v) for v in values)
        top = max(values)
        print(f"  {label:<40} {'inf' if top >= FAR else top:>8}   [{shown}]")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)  # the wrapper child in it is read by the jail's uid
        box = Sandbox.create(args.sandbox, Limits(), readonly=(*python_paths(), Path(tmp)))
        lab = Lab(Path(tmp))
        results = {"train": await train(lab, box, args)}
        try:
            import bpy  # noqa: F401, PLC0415 - optional: the render runtime's module
        except ImportError:
            print("render: bpy is not installed, skipped (pip install '.[render]')")
        else:
            results["render"] = await render(lab, box)
    for name, table in results.items():
        show(name, table)
    honest = max(v for t in results.values() for k, vs in t.items() if k.startswith("class")
                 for v in vs)  # fmt: skip
    print(f"\nRESULT honest_cross_class_max_ppm={honest}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--steps-per-segment", type=int, default=100)
    parser.add_argument("--sandbox", default="bwrap", choices=("bwrap", "limits"))
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse())
