"""The ``render`` runtime's child process: renders frames tile by tile with Blender's Cycles.

Run by :mod:`gpu.render` inside the sandbox as ``python -I render_child.py '<json args>'``; it
imports the standard library, ``bpy`` (Blender as a Python module), numpy and msgpack. The
job's ``entry`` is a ``.blend`` file or a Python script that builds the scene from an empty
file. The runtime fixes what decides the pixels: Cycles on the CPU, the job's seed (not
animated), a fixed sample count (``params.samples``), adaptive sampling, denoising and time
limits off, a fixed thread count (``params.threads``). Segment ``i`` is tile ``i % tiles`` of
frame ``first + i // tiles`` (``params.tiles = "2x2"``); its checkpoint is the tile's raw
float32 RGBA pixels with frame, tile and size, in a fixed layout. Tiles also land as OpenEXR
files in ``out/`` (``frame-0001-tile-0.exr``).

With ``"mode": "distance"`` it renders nothing: it prints ``distance_ppm <n>``, the mean
absolute pixel difference between a replayed tile and the worker's, relative to the mean
absolute value of the worker's (:func:`distance_ppm`), measured here, in the sandbox.
"""

from __future__ import annotations

import json
import math
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import bpy
import msgpack
import numpy as np

FORMAT = "idlegrid.render/1"
FAR = 1_000_000  # ppm: "infinite", tiles that do not load or do not compare
EPS = 1e-6  # the mean brightness under which a claimed tile counts as black


def load_scene(entry: str) -> Any:
    if entry.endswith(".blend"):
        bpy.ops.wm.open_mainfile(filepath=str(Path(entry).resolve()))
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        runpy.run_path(str(Path(entry).resolve()), run_name="scene")
    return bpy.context.scene


def fix_settings(scene: Any, seed: int, params: dict[str, str]) -> None:
    """Everything that could make two renders of one tile differ, pinned."""
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = int(params.get("samples", "16"))
    cycles.use_adaptive_sampling = False
    cycles.seed, cycles.use_animated_seed = seed, False
    cycles.use_denoising = False
    cycles.time_limit = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = int(params.get("threads", "1"))
    scene.render.use_persistent_data = False
    scene.render.use_stamp = False
    scene.render.resolution_percentage = 100
    settings = scene.render.image_settings
    settings.file_format, settings.color_depth, settings.exr_codec = "OPEN_EXR", "32", "NONE"


def tile_grid(spec: str) -> tuple[int, int]:
    across, _, down = spec.partition("x")
    return int(across), int(down)


def render_tile(scene: Any, frame: int, tile: int, grid: tuple[int, int], path: Path) -> bytes:
    """Renders one tile to ``path`` (OpenEXR) and returns its canonical bytes."""
    across, down = grid
    column, row = tile % across, tile // across
    scene.frame_set(frame)
    scene.render.use_border = across * down > 1
    scene.render.use_crop_to_border = True
    scene.render.border_min_x, scene.render.border_max_x = column / across, (column + 1) / across
    scene.render.border_min_y, scene.render.border_max_y = row / down, (row + 1) / down
    scene.render.filepath = str(path.resolve())
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path.resolve()))
    try:
        (width, height), channels = image.size, image.channels
        pixels = np.empty(width * height * channels, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    header = [FORMAT, frame, tile, int(width), int(height), int(channels)]
    packed: bytes = msgpack.packb([*header, pixels.astype("<f4").tobytes()], use_bin_type=True)
    return packed


def distance_ppm(replayed: bytes, claimed: bytes) -> int:
    """``mean|r - c| / max(mean|c|, EPS)`` over the tiles' pixels, in parts per million (at
    most :data:`FAR`); :data:`FAR` when a tile does not load or frame, tile, size differ."""
    try:
        a, b = msgpack.unpackb(replayed, raw=False), msgpack.unpackb(claimed, raw=False)
        if a[0] != FORMAT or len(a) != 7 or len(b) != 7 or a[:6] != b[:6]:
            return FAR
        x = np.frombuffer(a[6], dtype="<f4").astype(np.float64)
        y = np.frombuffer(b[6], dtype="<f4").astype(np.float64)
        if x.size != y.size or x.size != a[3] * a[4] * a[5]:
            return FAR
        ppm = float(np.mean(np.abs(x - y))) / max(float(np.mean(np.abs(y))), EPS) * 1e6
    except Exception:  # any bad file is "incomparable", not a crash
        return FAR
    return min(FAR, math.ceil(ppm)) if math.isfinite(ppm) else FAR


def main(args: dict[str, Any]) -> int:
    if args.get("mode") == "distance":
        ppm = distance_ppm(Path(args["replayed"]).read_bytes(), Path(args["claimed"]).read_bytes())
        print(f"distance_ppm {ppm}")
        return 0
    scene = load_scene(args["entry"])
    params = args["params"]
    fix_settings(scene, args["seed"], params)
    grid = tile_grid(params.get("tiles", "1x1"))
    tiles = grid[0] * grid[1]
    first, last_frame = args["first_frame"], args["last_frame"]
    segments = (last_frame - first + 1) * tiles
    last = segments - 1 if args.get("stop_after") is None else args["stop_after"]
    Path("out").mkdir(exist_ok=True)
    with os.fdopen(args["control_fd"], "w", buffering=1) as control:
        for index in range(args["resume_index"] + 1, last + 1):
            started, frame, tile = time.monotonic(), first + index // tiles, index % tiles
            image = Path("out") / f"frame-{frame:04d}-tile-{tile}.exr"
            blob = render_tile(scene, frame, tile, grid, image)
            path = Path(args["ckpt_dir"]) / f"seg-{index}.ckpt"
            path.write_bytes(blob)
            print(f"segment {index + 1}/{segments}: frame {frame} tile {tile + 1}/{tiles}, "
                  f"{time.monotonic() - started:.2f} s")  # fmt: skip
            control.write(json.dumps({"segment": index, "file": str(path)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
