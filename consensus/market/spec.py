"""Job specs: what a requester asks for, parsed strictly from a TOML document.

A spec file (see ``examples/``) has a few top-level keys and four tables::

    name = "mnist-small"          # a label, optional
    kind = "train"                # train | render | exec
    tasks = 1                     # how many tasks the job splits into
    split = "none"                # none | frames | tiles | shards
    verification = "standard"     # none | sampled | standard | strict
    network = false               # may the workload reach the network?

    [requirements]                # every key optional; 0 or "" means any
    gpu_class = "cpu"             # also min_score, vram_mb, gpu_count, cpu_cores,
    vram_mb = 0                   # ram_mb, region, max_latency_ms

    [runtime]                     # what runs; which keys matter depends on ``kind``
    entry = "train.py"            # train: script with init/step; render: .blend file
    command = ["python3", "x.py"] # exec: argv, run in the task's directory
    segments = 8                  # checkpoints per task (train: steps are split evenly)
    steps = 64                    # train: optimiser steps in all
    frames = "1-16"               # render: frame range
    seed = 0
    estimate_s = 60               # expected seconds on a reference worker (score 1000)
    params = { lr = "0.01" }      # passed to the workload as strings

    [io]
    inputs = ["data/", "train.py"]  # local paths, relative to the spec file
    outputs = ["out/"]              # paths the workload writes, relative to its directory
    datasets = { images = "<64 hex>" }  # datasets held here (idlegrid data add), by name

    [budget]
    max_total = "0.01 eth"        # cap on everything this job may cost
    max_price_per_s = "2 gwei"    # most you pay per GPU-second
    deadline = "2h"               # from submission

Money is an integer number of wei, or a decimal string with a unit (``wei``, ``gwei``,
``eth``) converted exactly, never through a float. Every error names the key and the reason,
e.g. ``budget.max_total: expected wei as an integer or "<amount> wei|gwei|eth", got 1.5``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("train", "render", "exec")
SPLITS = ("none", "frames", "tiles", "shards")
VERIFICATION_LEVELS = ("none", "sampled", "standard", "strict")
REFERENCE_SCORE = 1000  # a worker with this benchmark score takes ``estimate_s`` seconds
REFERENCE_GFLOPS = 10_000  # fp32 dense matmul of that reference worker (about an RTX 3060)
MAX_TASKS = 10_000
MAX_DATASETS = 8
# A dataset's directory in the task's folder: one plain path component, not hidden.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DEADLINE_S = 30 * 24 * 3600
_UNITS = {"wei": (0, 1), "gwei": (9, 10**9), "eth": (18, 10**18)}  # (decimals, wei)
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*(wei|gwei|eth)")
_DURATION = re.compile(r"([0-9]+)\s*(s|m|h|d)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FRAMES = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def estimated_seconds(estimate_s: int, score: int) -> int:
    """Seconds a worker of benchmark ``score`` should take for a task the requester expects to
    take ``estimate_s`` on the reference worker: what its bid says, and what an auction may
    assume of a worker that has not bid yet."""
    return max(1, estimate_s * REFERENCE_SCORE // max(1, score))


class SpecError(ValueError):
    """A job spec we refuse: ``key`` names the field (``budget.max_total``), ``reason`` why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Requirements:
    """What a worker must have to run a task; zero or empty means "any"."""

    gpu_class: str = ""
    min_score: int = 0
    vram_mb: int = 0
    gpu_count: int = 1
    cpu_cores: int = 0
    ram_mb: int = 0
    region: str = ""
    max_latency_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Runtime:
    entry: str = ""
    command: list[str] = field(default_factory=list)
    segments: int = 1
    steps: int = 0
    frames: str = ""
    seed: int = 0
    estimate_s: int = 60
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    name: str
    kind: str
    tasks: int
    split: str
    verification: str
    network: bool
    requirements: Requirements
    runtime: Runtime
    inputs: list[str]
    outputs: list[str]
    max_total_wei: int
    max_price_wei_per_s: int
    deadline_s: int
    datasets: dict[str, str] = field(default_factory=dict)  # name -> dataset id (hex)

    def task_budget_wei(self) -> int:
        """Each task's share of the budget (the remainder stays unspent in escrow)."""
        return self.max_total_wei // self.tasks


def parse_spec(doc: Mapping[str, Any]) -> JobSpec:
    """Builds a :class:`JobSpec` from a decoded TOML document, or raises :class:`SpecError`."""
    top = _Table(doc, "", {"name", "kind", "tasks", "split", "verification", "network",
                           "requirements", "runtime", "io", "budget"})  # fmt: skip
    kind = top.choice("kind", KINDS)
    tasks = top.integer("tasks", 1, 1, MAX_TASKS)
    split = top.choice("split", SPLITS, "none")
    if tasks > 1 and split == "none":
        raise SpecError("split", f"tasks = {tasks} needs a split: one of {', '.join(SPLITS[1:])}")
    io = top.table("io", {"inputs", "outputs", "datasets"})
    budget = top.table("budget", {"max_total", "max_price_per_s", "deadline"})
    spec = JobSpec(
        name=top.text("name"),
        kind=kind,
        tasks=tasks,
        split=split,
        verification=top.choice("verification", VERIFICATION_LEVELS, "standard"),
        network=top.flag("network", False),
        requirements=_requirements(top.table("requirements", set(_fields(Requirements)))),
        runtime=_runtime(top.table("runtime", set(_fields(Runtime))), kind),
        inputs=io.paths("inputs"),
        outputs=io.paths("outputs"),
        max_total_wei=budget.wei("max_total"),
        max_price_wei_per_s=budget.wei("max_price_per_s"),
        deadline_s=budget.duration("deadline", "1h"),
        datasets=io.datasets("datasets"),
    )
    _check_split(spec)
    _check_datasets(spec)
    if spec.max_total_wei < spec.tasks:
        raise SpecError("budget.max_total", f"must cover at least 1 wei per task ({spec.tasks})")
    return spec


def parse_amount(value: Any, key: str) -> int:
    """Wei from an int or ``"<amount> <unit>"``; exact, refusing a fraction of a wei."""
    if type(value) is int:
        if value < 0:
            raise SpecError(key, f"must not be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _AMOUNT.fullmatch(value.strip().lower())
        if match:
            whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
            decimals, scale = _UNITS[match.group(3)]
            if len(fraction) > decimals:
                raise SpecError(key, f"{value!r} is not a whole number of wei")
            return int(whole) * scale + int(fraction.ljust(decimals, "0") or "0")
    raise SpecError(key, f'expected wei as an integer or "<amount> wei|gwei|eth", got {value!r}')


def frame_range(frames: str) -> tuple[int, int]:
    """``"1-16"`` -> (1, 16); ``"7"`` -> (7, 7)."""
    match = _FRAMES.fullmatch(frames.strip())
    if not match:
        raise SpecError("runtime.frames", f'expected "FIRST-LAST" or "N", got {frames!r}')
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if last < first:
        raise SpecError("runtime.frames", f"last frame {last} is before the first {first}")
    return first, last


# --- fields ---------------------------------------------------------------------------------


def _requirements(t: _Table) -> Requirements:
    return Requirements(
        gpu_class=t.text("gpu_class"),
        min_score=t.integer("min_score", 0, 0, 10**9),
        vram_mb=t.integer("vram_mb", 0, 0, 10**7),
        gpu_count=t.integer("gpu_count", 1, 1, 64),
        cpu_cores=t.integer("cpu_cores", 0, 0, 4096),
        ram_mb=t.integer("ram_mb", 0, 0, 10**8),
        region=t.text("region"),
        max_latency_ms=t.integer("max_latency_ms", 0, 0, 60_000),
    )


def _runtime(t: _Table, kind: str) -> Runtime:
    runtime = Runtime(
        entry=t.text("entry"),
        command=t.strings("command"),
        segments=t.integer("segments", 1, 1, 100_000),
        steps=t.integer("steps", 0, 0, 10**9),
        frames=t.text("frames"),
        seed=t.integer("seed", 0, 0, 2**32 - 1),
        estimate_s=t.integer("estimate_s", 60, 1, MAX_DEADLINE_S),
        params=t.params("params"),
    )
    _KIND_CHECKS[kind](runtime)
    return runtime


def _check_train(runtime: Runtime) -> None:
    if not runtime.entry.endswith(".py"):
        raise SpecError("runtime.entry", "a train job needs a Python script (init/step)")
    if runtime.steps < runtime.segments:
        raise SpecError("runtime.steps", f"need at least one step per segment ({runtime.segments})")


def _check_render(runtime: Runtime) -> None:
    if not runtime.entry.endswith((".blend", ".py")):
        raise SpecError("runtime.entry", "a render job needs a .blend file (or a scene script)")
    frame_range(runtime.frames or "1")


def _check_exec(runtime: Runtime) -> None:
    if not runtime.command:
        raise SpecError("runtime.command", "an exec job needs a command (a list of strings)")


_KIND_CHECKS: dict[str, Callable[[Runtime], None]] = {
    "train": _check_train,
    "render": _check_render,
    "exec": _check_exec,
}


def _check_datasets(spec: JobSpec) -> None:
    """A dataset's directory would collide with an input of the same name in the task's folder."""
    tops = {path.replace("\\", "/").strip("/").split("/")[0] for path in spec.inputs}
    for name in spec.datasets:
        if name in tops:
            raise SpecError(f"io.datasets.{name}", "an input has that name too: rename one")


def _check_split(spec: JobSpec) -> None:
    if spec.split == "frames":
        first, last = frame_range(spec.runtime.frames or "1")
        if spec.kind != "render":
            raise SpecError("split", "frames split applies to render jobs")
        if spec.tasks > last - first + 1:
            raise SpecError("tasks", f"{spec.tasks} tasks for {last - first + 1} frames")
    if spec.kind == "train" and spec.split != "none":
        raise SpecError("split", "a train job is one chain of segments: split must be none")


def _fields(cls: type) -> list[str]:
    return list(getattr(cls, "__dataclass_fields__", {}))


class _Table:
    """One TOML table and its dotted path, so every error names the full key."""

    def __init__(self, data: Any, path: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise SpecError(path, f"expected a table, got {data!r}")
        self.data, self.path = data, path
        for key in data:
            if key not in known:
                raise SpecError(self.key(key), f"unknown key (one of {', '.join(sorted(known))})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def table(self, name: str, known: set[str]) -> _Table:
        return _Table(self.data.get(name, {}), self.key(name), known)

    def text(self, name: str, default: str = "") -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            raise SpecError(self.key(name), f"expected a string, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise SpecError(self.key(name), f"expected true or false, got {value!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.data.get(name, default)
        if type(value) is not int or not low <= value <= high:
            raise SpecError(self.key(name), f"expected an integer in {low}..{high}, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        if default is None and name not in self.data:
            raise SpecError(self.key(name), f"missing (one of {', '.join(choices)})")
        value = self.data.get(name, default)
        if value not in choices:
            raise SpecError(self.key(name), f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
            raise SpecError(self.key(name), f"expected a list of strings, got {value!r}")
        return list(value)

    def paths(self, name: str) -> list[str]:
        paths = self.strings(name)
        for path in paths:
            parts = path.replace("\\", "/").split("/")
            if not path or path.startswith("/") or ".." in parts:
                raise SpecError(self.key(name), f"{path!r} must be relative, inside the job folder")
        return paths

    def params(self, name: str) -> dict[str, str]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise SpecError(self.key(name), f"expected a table, got {value!r}")
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise SpecError(
                    f"{self.key(name)}.{key}", f"expected a string or integer, got {item!r}"
                )
            out[key] = str(item)
        return out

    def datasets(self, name: str) -> dict[str, str]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise SpecError(
                self.key(name), f'expected a table like {{ images = "<64 hex>" }}, got {value!r}'
            )
        if len(value) > MAX_DATASETS:
            raise SpecError(self.key(name), f"at most {MAX_DATASETS} datasets, got {len(value)}")
        out = {}
        for key, item in value.items():
            where = f"{self.key(name)}.{key}"
            if not DATASET_NAME.fullmatch(key):
                raise SpecError(where, "a name of letters, digits, . _ - (not hidden, no /)")
            if not (isinstance(item, str) and re.fullmatch(r"[0-9a-fA-F]{64}", item)):
                raise SpecError(
                    where, f"expected a dataset id (64 hex, from `idlegrid data add`), got {item!r}"
                )
            out[key] = item.lower()
        return out

    def wei(self, name: str) -> int:
        if name not in self.data:
            raise SpecError(self.key(name), 'missing (an amount such as 1000000000 or "0.01 eth")')
        return parse_amount(self.data[name], self.key(name))

    def duration(self, name: str, default: str) -> int:
        value = self.data.get(name, default)
        seconds: int | None = None
        if type(value) is int:
            seconds = value
        elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
            seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds is None or not 1 <= seconds <= MAX_DEADLINE_S:
            raise SpecError(
                self.key(name), f'expected seconds or "<n>s|m|h|d" up to 30 days, got {value!r}'
            )
        return seconds
