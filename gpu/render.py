"""The ``render`` runtime: Blender Cycles frames, tile by tile, each tile a hashed checkpoint.

Tiles are independent, so a resumed or replayed run simply starts at the next tile; the chain
still commits to every tile in order. Needs ``bpy`` (``pip install '.[render]'``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from consensus.market.spec import SpecError, frame_range
from gpu.runtime import RunSpec
from gpu.segmented import SegmentedRuntime

_TILES = re.compile(r"([1-9][0-9]?)x([1-9][0-9]?)")


class RenderRuntime(SegmentedRuntime):
    kinds = frozenset({"render"})
    child = Path(__file__).resolve().parent / "render_child.py"

    def check(self, spec: RunSpec) -> str:
        workload = spec.workload
        if not workload.entry.endswith((".blend", ".py")):
            return f"runtime.entry: {workload.entry!r} is neither a .blend file nor a scene script"
        if not (spec.workdir / workload.entry).is_file():
            return f"runtime.entry: {workload.entry!r} is not among the inputs"
        try:
            frame_range(workload.frames or "1")
        except SpecError as exc:
            return str(exc)
        if not _TILES.fullmatch(workload.params.get("tiles", "1x1")):
            return f"params.tiles: expected COLUMNSxROWS like 2x2, got {workload.params['tiles']!r}"
        return ""

    def child_args(self, spec: RunSpec) -> dict[str, Any]:
        workload = spec.workload
        first, last = frame_range(workload.frames or "1")
        return {"entry": workload.entry, "seed": workload.seed, "params": workload.params,
                "first_frame": first, "last_frame": last}  # fmt: skip
