"""The ``train`` runtime's child process: drives a job's PyTorch script in segments.

Run by :mod:`gpu.train` inside the sandbox as ``python -I train_child.py '<json args>'``; it
imports only the standard library, torch, numpy and msgpack (the idlegrid packages are not in
the jail). The job's script provides::

    def dataset(ctx) -> (inputs, targets)          # tensors; the runtime batches them
    def init(ctx) -> (model, optimizer)            # the runtime seeds torch first
    def step(ctx, model, optimizer, batch) -> loss # one optimiser step on (inputs, targets)

``ctx`` has ``params`` (strings from the job spec), ``seed``, ``device``, ``dtype`` and ``step``
(the global step about to run). The runtime owns everything that decides the result: seeds,
deterministic algorithms, thread count, precision, batch order (a permutation per epoch from
the job's seed) and the segment boundaries. After each segment it writes the canonical state
(:func:`encode_state`) to ``<ckpt_dir>/seg-<i>.ckpt`` and reports it on the control pipe; the
parent moves the file out of the jail and hashes it, so the workload cannot rewrite history.
With ``"points": m`` above 1 (a worker's run, not a replay) it also reports, before each
segment, the BLAKE3 of the canonical state at each of the segment's inner points: the hash its
file would have, without writing it (a sentry's replay stopped there writes the file and
hashes it), so a sentry can replay only up to one of them. It starts with ``m`` points a
segment and lowers the count (``m / 2``, ...) once it has measured what hashing a state costs
against the steps (:class:`PointPlan`); each segment's report says its count. The time points
take is logged apart (``points <s> s``): it is verification's cost, not the job's.

With ``"mode": "distance"`` it loads no job: it measures how far a replayed state is from the
worker's claimed one (:func:`distance_ppm`) and prints ``distance_ppm <n>``. Checkpoints are
untrusted bytes, so this runs here, in the sandbox, never in the daemon.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
from blake3 import blake3

# torch.cuda imports pynvml, which warns that it is deprecated: noise in every job's log
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.cuda")
import torch  # noqa: E402 - after the filter above

FORMAT = "idlegrid.train/1"
FINAL = "model.ckpt"
TENSOR = 1  # msgpack extension code of a tensor: [dtype, shape, little-endian bytes]
FAR = 1_000_000  # ppm: "infinite", states that do not load or do not compare
EPS = 1e-6  # the norm under which a claimed tensor counts as zero (relative distance's floor)
PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16,
              "fp16": torch.float16}  # fmt: skip


@dataclass
class Cursor:
    """Where the data stream stands: the epoch and the position in its permutation."""

    epoch: int = 0
    position: int = 0
    order: Any = field(default=None, repr=False)  # the epoch's permutation, rebuilt from the seed


# --- canonical state -----------------------------------------------------------------------


def _canon(value: Any) -> Any:
    """Plain msgpack-able values in a fixed order: dict keys sorted, tuples as lists."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {k: _canon(value[k]) for k in sorted(value, key=lambda k: (str(type(k)), k))}
    if isinstance(value, list | tuple):
        if all(type(v) is int for v in value):  # the Python RNG's 625 words: no walk needed
            return list(value)
        return [_canon(v) for v in value]
    return value


def _pack_tensor(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot checkpoint a {type(value).__name__}")
    flat = value.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    header = [str(flat.dtype).removeprefix("torch."), list(value.shape), raw]
    return msgpack.ExtType(TENSOR, msgpack.packb(header, use_bin_type=True))


def _unpack_tensor(code: int, data: bytes) -> Any:
    if code != TENSOR:
        raise ValueError(f"unknown extension {code} in a checkpoint")
    dtype_name, shape, raw = msgpack.unpackb(data, raw=False)
    dtype = getattr(torch, dtype_name)
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)


def encode_state(model: Any, optimizer: Any, cursor: Cursor, step: int) -> bytes:
    """Weights, optimiser, RNG and data cursor, in a fixed order and byte layout."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(_py_rng())}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": FORMAT,
        "step": step,
        "cursor": [cursor.epoch, cursor.position],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng,
    }
    packed: bytes = msgpack.packb(_canon(state), default=_pack_tensor, use_bin_type=True)
    return packed


def decode_state(data: bytes) -> dict[str, Any]:
    state: dict[str, Any] = msgpack.unpackb(
        data, ext_hook=_unpack_tensor, raw=False, strict_map_key=False
    )
    if state.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} checkpoint")
    return state


def _py_rng() -> tuple[Any, ...]:
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def _restore(state: dict[str, Any], model: Any, optimizer: Any, cursor: Cursor) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    cursor.epoch, cursor.position = state["cursor"]
    step: int = state["step"]
    return step


# --- distance between two states -----------------------------------------------------------


class Incomparable(Exception):
    """The two states differ in structure: keys, lengths, shapes, dtypes or plain values."""


def _tensor_pairs(a: Any, b: Any, path: str) -> Any:
    """(path, replayed tensor, claimed tensor) for every tensor, the structures walked together.

    Raises:
        Incomparable: anything but the tensors' values differs.
    """
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise Incomparable(f"{path}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        yield path, a, b
    elif isinstance(a, dict) and isinstance(b, dict):
        if sorted(map(str, a)) != sorted(map(str, b)):
            raise Incomparable(f"{path}: other keys")
        for key in a:
            yield from _tensor_pairs(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise Incomparable(f"{path}: other lengths")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _tensor_pairs(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        raise Incomparable(f"{path}: {a!r} vs {b!r}")


def distance_ppm(
    replayed: bytes, claimed: bytes, rng: bool = False, moved: bool = False
) -> tuple[int, str]:
    """The largest relative distance ``||r - c|| / max(||c||, EPS)`` over the tensors of the
    weights and optimiser state, in parts per million (at most :data:`FAR`), and where.

    Step, data cursor and every non-tensor value must be equal, shapes and dtypes too, else
    :data:`FAR`. The RNG state is compared only with ``rng`` (a bisection, between classes
    whose generators are the same: a GPU's generator state is not a CPU's); then it must be
    equal, else :data:`FAR`: a state's randomness is not for its worker to choose. ``moved``:
    how far a step moved a state (two states of different steps: step and cursor not compared).
    """
    try:
        a, b = decode_state(replayed), decode_state(claimed)
        if not moved and (a["step"], a["cursor"]) != (b["step"], b["cursor"]):
            return FAR, f"step/cursor {a['step']}/{a['cursor']} vs {b['step']}/{b['cursor']}"
        if rng and _packed(a["rng"]) != _packed(b["rng"]):
            return FAR, "rng: another random state"
        worst, where = 0.0, ""
        pairs = _tensor_pairs([a["model"], a["optimizer"]], [b["model"], b["optimizer"]], "")
        for path, x, y in pairs:
            x64, y64 = x.to(torch.float64), y.to(torch.float64)
            rel = float(torch.linalg.vector_norm(x64 - y64)) / max(
                float(torch.linalg.vector_norm(y64)), EPS
            )
            if not math.isfinite(rel):
                return FAR, f"{path}: not finite"
            if rel > worst:
                worst, where = rel, path
    except Exception as exc:  # any bad file is "incomparable", not a crash
        return FAR, f"{type(exc).__name__}: {str(exc)[:200]}"
    return min(FAR, math.ceil(worst * 1e6)), where


def _packed(value: Any) -> bytes:
    packed: bytes = msgpack.packb(_canon(value), default=_pack_tensor, use_bin_type=True)
    return packed


def report_distance(args: dict[str, Any]) -> int:
    ppm, where = distance_ppm(Path(args["replayed"]).read_bytes(),
                              Path(args["claimed"]).read_bytes(), bool(args.get("rng")),
                              bool(args.get("moved")))  # fmt: skip
    print(f"largest at {where or '-'}")
    print(f"distance_ppm {ppm}")
    return 0


# --- the run -------------------------------------------------------------------------------


def deterministic(seed: int, threads: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)


def load_job(entry: str) -> Any:
    spec = importlib.util.spec_from_file_location("job", Path(entry).resolve())
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {entry}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [f for f in ("dataset", "init", "step") if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(f"{entry} must define {', '.join(missing)}")
    return module


def next_batch(data: tuple[Any, Any], cursor: Cursor, batch: int, seed: int) -> Any:
    """The next ``batch`` examples; a new epoch (a new permutation) when one runs out."""
    count = len(data[0])
    if cursor.order is None or cursor.position + batch > count:
        if cursor.order is not None:
            cursor.epoch, cursor.position = cursor.epoch + 1, 0
        generator = torch.Generator().manual_seed(seed * 1_000_003 + cursor.epoch)
        cursor.order = torch.randperm(count, generator=generator)
    index = cursor.order[cursor.position : cursor.position + batch]
    cursor.position += batch
    return data[0][index], data[1][index]


def make_context(args: dict[str, Any]) -> SimpleNamespace:
    params = args["params"]
    precision = params.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"params.precision: one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SimpleNamespace(params=params, seed=args["seed"], device=device,
                           dtype=PRECISIONS[precision], step=0)  # fmt: skip


def prepare(args: dict[str, Any]) -> tuple[Any, ...]:
    """The job, its context, data, model and optimiser, at the resume point if there is one."""
    ctx = make_context(args)
    threads = int(ctx.params.get("threads", "1"))
    deterministic(args["seed"], threads)
    job = load_job(args["entry"])
    inputs, targets = job.dataset(ctx)
    if inputs.is_floating_point():
        inputs = inputs.to(ctx.dtype)
    data = (inputs.to(ctx.device), targets.to(ctx.device))
    model, optimizer = job.init(ctx)
    model.to(device=ctx.device, dtype=ctx.dtype)  # keeps the Parameter objects the optimiser holds
    cursor, step = Cursor(), 0
    if args["resume"]:
        step = _restore(decode_state(Path(args["resume"]).read_bytes()), model, optimizer, cursor)
        generator = torch.Generator().manual_seed(args["seed"] * 1_000_003 + cursor.epoch)
        cursor.order = torch.randperm(len(data[0]), generator=generator)
    return job, ctx, data, model, optimizer, cursor, step


def point_steps(begin: int, end: int, points: int) -> list[int]:
    """The global steps after which a segment's inner points fall: the parent's
    ``consensus.verify.sampling.point_step`` rule, repeated (no idlegrid module here)."""
    return [begin + j * (end - begin) // points for j in range(1, points)]


@dataclass
class PointPlan:
    """How many points the next segment commits to: ``most`` at first, then, from what the
    points measured so far cost against the steps, the count that spends least on
    verification (``consensus.verify.sampling.choose_points``, repeated here); never more
    than before, so every segment's points include the final count's."""

    most: int
    segments: int
    sample: int
    count: int = 0
    point_s: float = 0.0  # time hashing points so far
    points: int = 0  # points hashed so far
    step_s: float = 0.0  # time running the steps of the segments that had points
    measured: int = 0  # those segments

    def __post_init__(self) -> None:
        self.count = self.most if self.sample < self.segments - 1 else 1

    def after(self, step_s: float, point_s: float, points: int) -> None:
        if not points:
            return
        self.point_s, self.points = self.point_s + point_s, self.points + points
        self.step_s, self.measured = self.step_s + step_s, self.measured + 1
        cost = (self.point_s / self.points) / max(self.step_s / self.measured, 1e-9)
        self.count = min(self.count, choose_points(cost, self.segments, self.sample, self.most))


def choose_points(cost: float, segments: int, size: int, most: int) -> int:
    if size >= segments - 1:
        return 1
    counts = [most >> k for k in range(most.bit_length()) if (most >> k) << k == most]

    def spent(m: int) -> float:
        return (m - 1) * cost * segments + size * (m + 1) / (2 * m) + 1

    return min(counts, key=lambda m: (spent(m), -m))


@dataclass
class Points:
    """Reports the hashes of a segment's inner point states as the steps reach them, and
    times it."""

    control: Any
    index: int
    due: list[int]  # the steps still to hash, in order (repeats where a segment is short)
    seconds: float = 0.0
    written: int = 0

    def write_due(self, model: Any, optimizer: Any, cursor: Cursor, step: int) -> None:
        while self.due and self.due[0] == step:
            started, point = time.monotonic(), self.written + 1
            digest = blake3(encode_state(model, optimizer, cursor, step)).hexdigest()
            report = {"segment": self.index, "point": point, "hash": digest, "step": step}
            self.control.write(json.dumps(report) + "\n")
            self.due.pop(0)
            self.written = point
            self.seconds += time.monotonic() - started


def run_segment(prepared: tuple[Any, ...], step: int, end: int, inner: Points) -> Any:
    """Runs the steps from ``step`` up to ``end`` on ``prepared`` (job, context, data, model,
    optimiser, cursor), hashing the inner points on the way; the last loss."""
    job, ctx, data, model, optimizer, cursor = prepared
    loss, batch = None, int(ctx.params.get("batch_size", 32))
    inner.write_due(model, optimizer, cursor, step)
    while step < end:
        ctx.step = step
        loss = job.step(ctx, model, optimizer, next_batch(data, cursor, batch, ctx.seed))
        step += 1
        inner.write_due(model, optimizer, cursor, step)
    return loss


def main(args: dict[str, Any]) -> int:
    if args.get("mode") == "distance":
        return report_distance(args)
    *prepared, step = prepare(args)  # job, ctx, data, model, optimizer, cursor; step
    segments = args["segments"]
    last = segments - 1 if args.get("stop_after") is None else args["stop_after"]
    stop_step = args.get("stop_step")  # a bisection's probe: the state after that global step
    most = int(args.get("points", 1)) if stop_step is None else 1
    plan = PointPlan(most, segments, int(args.get("sample", 16)))
    with os.fdopen(args["control_fd"], "w", buffering=1) as control:
        for index in range(args["resume_index"] + 1, last + 1):
            started, first = time.monotonic(), step
            begin, end = index * args["steps"] // segments, (index + 1) * args["steps"] // segments
            if stop_step is not None:
                if not step <= stop_step <= end:
                    raise ValueError(f"stop_step {stop_step} outside steps {step}..{end}")
                end = stop_step
            count = plan.count
            inner = Points(control, index, point_steps(begin, end, count))
            loss = run_segment(tuple(prepared), step, end, inner)
            step = end  # the steps ran up to it
            model, optimizer, cursor = prepared[3:]
            blob = encode_state(model, optimizer, cursor, step)
            path = Path(args["ckpt_dir"]) / f"seg-{index}.ckpt"
            path.write_bytes(blob)
            steps_s = time.monotonic() - started - inner.seconds
            plan.after(steps_s, inner.seconds, inner.written)
            extra = f", points {inner.seconds:.4f} s" if most > 1 else ""
            print(f"segment {index + 1}/{segments}: step {step}, loss {float(loss or 0):.6f}, "
                  f"{(end - first) / max(steps_s, 1e-9):.1f} steps/s{extra}")  # fmt: skip
            report = {"segment": index, "file": str(path), "step": step, "points": count}
            control.write(json.dumps(report) + "\n")
            if index == segments - 1 and stop_step is None:
                Path(FINAL).write_bytes(blob)  # the trained state, for the job's outputs
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
