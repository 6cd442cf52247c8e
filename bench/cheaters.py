"""Cheating workers against the sentry: detection rate, false positives, overhead vs redundancy.

Run: ``.venv/bin/python bench/cheaters.py [--segments 32] [--trials 12] [--honest-trials 2]``

Every run and every replay goes through the real runtimes in the sandbox: PyTorch on the CPU
(``examples/train-tiny``), Blender Cycles (``examples/render-scene``, when ``bpy`` is installed),
``exec`` (``examples/exec-wordcount``). An honest worker runs each task once; each cheater
produces its attested checkpoints the way that cheat would (running the faked segments at lower
precision or a smaller batch with the real runtime, repeating a state instead of computing it,
writing random checkpoints, reordering them, copying another task's run, garbage render tiles,
refusing challenges). For each trial a fresh seed samples the segments by the public rule
(:func:`consensus.verify.sampling.sample`), and the sentry's real game
(:mod:`consensus.verify.game`, driven by :func:`node.verify.play.play`) asks, checks the Merkle
proofs and replays with the runtime. Replays are cached by (task, segment, start state): a
replay is a pure function of those, so trials of one cheat share them.

Overhead is compute: the seconds the runtime's child reports per segment (process start-up,
mostly ``import torch``, is printed apart; it is fixed per replay and vanishes next to real
segments of minutes). The redundancy baseline re-runs the whole honest task in the same run.
Job lengths of 256..1024 segments are modelled from the measured per-segment costs and the
sample size the config ships with.

``--cross-class``: the sentry replays train tasks in another determinism class (torch's
kernels pinned to ``ATEN_CPU_CAPABILITY=default``, as on a CPU without AVX-512: not bitwise),
asks for the end files and passes a segment whose distance is within ``verify.tolerance_ppm``;
a miss is bisected to one step as the node's sentry does (``bench/bisect_lab.py``: each probe
answered the way that worker's cheat makes its states), and the step check decides: a failed
step is caught, a failed honest worker a false positive. A miss that cannot be bisected is
counted as caught (it escalates to a same-class sentry; an honest one that escalates is
counted apart, it is a cost, not a false positive).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from math import ceil
from pathlib import Path
from typing import Any

import trio
from bisect_lab import Bisections, ProbeAnswer, StateMaker, bisect  # bench/, run as a script
from blake3 import blake3

from config.schema import VerifySettings
from consensus.market.messages import TaskRef, Workload
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.bisection import bisectable
from consensus.verify.messages import Attestation, ChallengeResponse, attestation_id
from consensus.verify.qos import benchmark_problem
from consensus.verify.sampling import (
    POINTS,
    choose_points,
    common_points,
    detection_probability,
    point_step,
    sample,
)
from gpu import bench as gpubench
from gpu.exec_runtime import ExecRuntime
from gpu.render import RenderRuntime
from gpu.runtime import GENESIS, RunSpec, SegmentDone
from gpu.runtimes import python_paths
from gpu.sandbox import Limits, Sandbox
from gpu.train import TrainRuntime
from node.verify.play import answer_from, play, replay_segment, stop_step, stops_of

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
Faking = Callable[[int, int, bytes], Awaitable[bytes]]  # (segment, step, start) -> its state
_TRAIN_RATE = re.compile(r"segment \d+/\d+: step \d+, loss [-0-9.e]+, ([0-9.]+) steps/s")
_POINTS_TIME = re.compile(r", points ([0-9.]+) s$")
_RENDER_TIME = re.compile(r"segment \d+/\d+: frame .*, ([0-9.]+) s$")


@dataclass(frozen=True)
class Task:
    name: str
    runtime: Any
    workload: Workload
    inputs: tuple[Path, ...]
    steps_per_segment: int = 0
    sentry: Any = None  # the sentry's runtime when it differs from the worker's (--cross-class)


class OtherClass(TrainRuntime):
    """The train runtime with torch's kernels pinned to another instruction set."""

    def child_env(self, spec: RunSpec) -> dict[str, str]:
        return {**super().child_env(spec), "ATEN_CPU_CAPABILITY": "default"}


@dataclass
class Variant:
    """What one worker attests for one task: its checkpoint files, and how much it faked.

    ``points``: each segment's inner point hashes (a train run commits to them), empty
    without; ``share``: the fraction of the job's steps faked, where it fakes inside segments
    (``faked`` then counts the segments it touched)."""

    task: Task
    kind: str
    files: list[bytes]
    faked: int
    points: list[list[bytes]] = field(default_factory=list)
    share: Fraction | None = None
    refuses: bool = False
    probe: ProbeAnswer | None = None  # its state inside a segment, as its cheat makes it
    caught: int = 0
    escalated: int = 0  # of the caught: cross-class misses left undecided (no bisection)
    bisected: int = 0  # cross-class misses bisected to one step (caught if that step failed)
    trials: int = 0
    replays: int = 0


@dataclass(frozen=True)
class Ran:
    """A real run's checkpoint files, compute seconds and inner point hashes per segment, and
    the seconds its child spent writing those points (verification's cost on the worker)."""

    files: list[bytes]
    seconds: list[float]
    points: list[list[bytes]]
    points_seconds: float


@dataclass
class Lab:
    root: Path
    limiter: trio.CapacityLimiter
    cache: dict[tuple[str, int, bytes, bytes, int], Replayed] = field(default_factory=dict)
    busy: dict[tuple[str, int, bytes, bytes, int], trio.Event] = field(default_factory=dict)
    starts: list[float] = field(default_factory=list)  # replay wall minus segment compute
    distances: dict[str, list[int | None]] = field(default_factory=dict)  # per variant kind
    bisections: Bisections = field(default_factory=Bisections)
    tolerance_ppm: int = VerifySettings().tolerance_ppm  # cross-class; --tolerance-ppm
    maker: StateMaker = field(init=False)  # states inside a segment, for bisections
    made: int = 0

    def __post_init__(self) -> None:
        self.maker = StateMaker(self.workdir, self.limiter)

    def honest_probe(self, task: Task, files: list[bytes]) -> ProbeAnswer:
        """An honest worker's answer: its own segment replayed in its own class."""

        async def answer(index: int, step: int) -> bytes:
            start = files[index - 1] if index else b""
            state = await self.maker.state_after(
                task, task.runtime, task.workload, index, start, step
            )
            return state or b""  # its own start does not run here: nothing to show

        return answer

    def workdir(self, task: Task) -> Path:
        self.made += 1
        path = self.root / f"{task.name}-{self.made}"
        path.mkdir()
        for source in task.inputs:
            target = path / source.name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
        return path

    async def run(
        self,
        task: Task,
        workload: Workload | None = None,
        start: bytes | None = None,
        start_index: int = -1,
    ) -> Ran:
        """What segments ``start_index + 1 ..`` of a real run give."""
        workdir, files, logs = self.workdir(task), [], []
        points: list[list[bytes]] = []
        resume = None
        if start is not None:
            resume = workdir.parent / f"{workdir.name}.resume"
            resume.write_bytes(start)

        async def keep(done: SegmentDone) -> None:
            files.append(done.checkpoint.read_bytes())
            points.append(list(done.points))

        spec = RunSpec(task.name, workload or task.workload, workdir, resume, start_index, GENESIS)
        async with self.limiter:
            started = time.perf_counter()
            result = await task.runtime.run(spec, keep, logs.append)
            wall = time.perf_counter() - started
        if not result.ok:
            raise RuntimeError(f"{task.name} run failed: {result.error}: {logs[-5:]}")
        spent = sum(float(m.group(1)) for line in logs if (m := _POINTS_TIME.search(line)))
        return Ran(files, compute_seconds(task, logs, wall, len(files)), points, spent)

    async def replay(
        self, task: Task, index: int, start: bytes, end: bytes, stop: int | None = None
    ) -> Replayed:
        """(state hash, compute seconds, distance to ``end``) of a real replay by the sentry's
        runtime, to global step ``stop`` or the segment's end; each distinct one runs once."""
        key = (task.name, index, blake3(start).digest(), blake3(end).digest(), stop or -1)
        while key in self.busy:
            await self.busy[key].wait()
        if key in self.cache:
            return self.cache[key]
        self.busy[key] = trio.Event()
        try:
            logs: list[str] = []
            spec = RunSpec(task.name, task.workload, self.workdir(task))
            async with self.limiter:
                started = time.perf_counter()
                state, distance = await replay_segment(
                    task.sentry or task.runtime, spec, index, start, logs.append, end=end,
                    stop_step=stop,
                )  # fmt: skip
                wall = time.perf_counter() - started
            steps = replayed_steps(task, index, stop)
            seconds = compute_seconds(task, logs, wall, 1, steps)[0] if state != bytes(32) else 0.0
            self.starts.append(wall - seconds)
            self.cache[key] = Replayed(state, seconds, distance)
            return self.cache[key]
        finally:
            self.busy.pop(key).set()


@dataclass(frozen=True)
class Replayed:
    state: bytes
    seconds: float
    distance: int | None


def replayed_steps(task: Task, index: int, stop: int | None) -> int:
    """The steps a train replay of segment ``index`` runs, to ``stop`` or its end."""
    workload = task.workload
    begin = index * workload.steps // workload.segments
    return (stop if stop is not None else (index + 1) * workload.steps // workload.segments) - begin


def compute_seconds(
    task: Task, logs: list[str], wall: float, count: int, steps: int | None = None
) -> list[float]:
    """Per-segment compute from the child's own timing lines (``steps`` per segment, or the
    job's); an exec run's wall time."""
    if task.name == "train":
        rates = [float(m.group(1)) for line in logs if (m := _TRAIN_RATE.search(line))]
        ran = task.steps_per_segment if steps is None else steps
        return [ran / r if r else 0.0 for r in rates] or [0.0] * count
    if task.name == "render":
        return [float(m.group(1)) for line in logs if (m := _RENDER_TIME.search(line))]
    return [wall] * count


def attest(variant: Variant, trial: int) -> Attestation:
    hashes = [state_hash(variant.task, f) for f in variant.files]
    ref = TaskRef(job_id=blake3(variant.kind.encode()).digest()[:16], task=0, attempt=trial)
    count, points = common_points(variant.points)
    return Attestation(
        expires_ms=2**62,
        nonce=trial.to_bytes(16, "big"),
        ref=ref,
        worker=variant.kind,
        root=tree.root(tree.chain_leaves(hashes, points=points if count > 1 else None)),
        segments=len(hashes),
        result_hash=hashes[-1],
        seconds=0,
        runtime=variant.task.name,
        det_class="cpu",
        workload=variant.task.workload,
        points=count,
    )


async def judge(
    lab: Lab, variant: Variant, trial: int, size: int, deadline_ms: int
) -> tuple[float, int]:
    """One sentry game over a fresh seed; returns the replay compute it cost, and the steps
    it replayed (train)."""
    att = attest(variant, trial)
    att_id = attestation_id(att)
    seed = blake3(b"bench-seed" + att_id).digest()
    now = lambda: int(trio.current_time() * 1000)  # noqa: E731
    same = variant.task.sentry is None
    sampled = sample(seed, att.segments, size)
    stops = stops_of(att, seed, sampled) if same else {}
    game = g.Game(att, att_id, sampled, now() + deadline_ms, same, lab.tolerance_ppm, stops)
    hashes = [state_hash(variant.task, f) for f in variant.files]
    spent, steps = [0.0], [0]

    async def ask(index: int) -> ChallengeResponse | None:
        if variant.refuses:
            await trio.sleep_forever()
        points = common_points(variant.points)[1] or None
        return answer_from(att, hashes, lambda i: variant.files[i], index, with_end=not same,
                           points=points)  # fmt: skip

    async def replay(index: int, start: bytes, end: bytes, stop: int) -> tuple[bytes, int | None]:
        at = stop_step(att, index, stop)
        got = await lab.replay(variant.task, index, start, end, at)
        spent[0] += got.seconds
        if variant.task.name == "train":
            steps[0] += replayed_steps(variant.task, index, at)
        variant.replays += 1
        lab.distances.setdefault(variant.kind, []).append(got.distance)
        return got.state, got.distance

    decision = await play(game, ask, replay, now)
    task = variant.task
    if isinstance(decision, g.Escalate) and task.sentry is not None and bisectable(task.workload):
        answer = variant.probe or lab.honest_probe(task, variant.files)
        verdict = await bisect(
            lab.maker, task, variant.files, decision, answer, lab.bisections, lab.tolerance_ppm
        )
        if verdict is not None:  # else no verdict (our replay failed): it stays escalated
            variant.bisected += 1
            decision = verdict
    variant.trials += 1
    honest = variant.kind.startswith("honest")
    if honest and not (isinstance(decision, g.Decide) and decision.passed):
        what = "ESCALATED" if isinstance(decision, g.Escalate) else "FALSE POSITIVE"
        print(f"  {what} {variant.kind} trial {trial}: {decision.reason}")
    escalated = isinstance(decision, g.Escalate)
    variant.caught += escalated or (isinstance(decision, g.Decide) and not decision.passed)
    variant.escalated += escalated
    return spent[0], steps[0]


# --- the cheats ------------------------------------------------------------------------------


async def train_variants(lab: Lab, task: Task, honest: Ran) -> list[Variant]:
    n, h = len(honest.files), honest.files
    faked = ceil(n / 4)
    a, b = n // 4, n // 4 + faked  # a contiguous quarter, the final segment left honest

    async def continue_from(state: bytes, index: int) -> Ran:
        return await lab.run(task, start=state, start_index=index)

    async def region(**params: str) -> Ran:
        cheat = replace(task.workload, params={**task.workload.params, **params})
        return await lab.run(task, cheat, h[a - 1], a - 1)

    def probes(files: list[bytes], faking: Faking) -> Any:
        """Probe answers: in the faked segments as ``faking`` makes them (segment, step,
        the segment's start file), elsewhere honest."""
        honestly = lab.honest_probe(task, files)

        async def answer(index: int, step: int) -> bytes:
            if a <= index < b:
                return await faking(index, step, files[index - 1])
            return await honestly(index, step)

        return answer

    def running(workload: Workload, by: Task = task) -> Faking:
        async def state(index: int, step: int, start: bytes) -> bytes:
            got = await lab.maker.state_after(by, by.runtime, workload, index, start, step)
            return got or b""

        return state

    async def repeated(index: int, step: int, start: bytes) -> bytes:
        return start  # the steps never ran

    inner = common_points(honest.points)[0] - 1  # inner points every segment commits to
    out: list[Variant] = []
    skipped = [h[a - 1]] * faked  # the state is repeated, the steps never run
    rest = await continue_from(skipped[-1], b - 1)
    files = h[:a] + skipped + rest.files
    points = honest.points[:a] + [[blake3(h[a - 1]).digest()] * inner] * faked + rest.points
    out.append(Variant(task, "skip_steps", files, faked, points, probe=probes(files, repeated)))
    for kind, params in (
        ("lower_precision", {"precision": "bf16"}),
        ("smaller_batch", {"batch_size": "8"}),
    ):
        cheat = await region(**params)
        rest = await continue_from(cheat.files[faked - 1], b - 1)
        files = h[:a] + cheat.files[:faked] + rest.files
        points = honest.points[:a] + cheat.points[:faked] + rest.points
        how = running(replace(task.workload, params={**task.workload.params, **params}))
        out.append(Variant(task, kind, files, faked, points, probe=probes(files, how)))
    noise = [os.urandom(len(h[i])) for i in range(a, b)]

    async def garbage(index: int, step: int, start: bytes) -> bytes:
        return os.urandom(len(start))

    files = h[:a] + noise + h[b:]
    points = honest.points[:a] + [[os.urandom(32) for _ in range(inner)] for _ in noise]
    points += honest.points[b:]
    out.append(Variant(task, "fake_checkpoints", files, faked, points,
                       probe=probes(files, garbage)))  # fmt: skip
    r = max(b, a + 2)  # at least two to reorder
    files = h[:a] + h[a:r][::-1] + h[r:]
    points = honest.points[:a] + honest.points[a:r][::-1] + honest.points[r:]
    out.append(Variant(task, "reorder_checkpoints", files, r - a, points))
    other = replace(task, workload=replace(task.workload, seed=task.workload.seed + 1))
    copied = await lab.run(other)
    copy_probe = lambda i, step: running(other.workload)(i, step, copied.files[i - 1] if i else b"")  # noqa: E731
    out.append(Variant(task, "copy_result", copied.files, n, copied.points, probe=copy_probe))
    out.append(Variant(task, "refuse_challenges", list(h), n, honest.points, refuses=True))
    out.append(await skipped_tails(lab, task, running))
    return out


TAIL_CHEAT = """

_honest_step = step


def step(ctx, model, optimizer, batch):  # the cheat: the last steps of each segment skipped
    per, tail = int(ctx.params["cheat_per"]), int(ctx.params["cheat_tail"])
    if ctx.step < int(ctx.params["cheat_until"]) and ctx.step % per >= per - tail:
        return torch.zeros(())  # the data cursor moves on, the model does not
    return _honest_step(ctx, model, optimizer, batch)
"""


async def skipped_tails(lab: Lab, task: Task, running: Any) -> Variant:
    """The cheat that points are weakest against: in every non-final segment it skips the
    last steps (a quarter of the job's in all), so only a replay that stops past the first
    skipped step catches it; its points up to there are honest."""
    workload, n = task.workload, task.workload.segments
    per = workload.steps // n
    tail = ceil(per * n / (4 * (n - 1)))  # >= 25 % of the job, the final segment honest
    script = lab.root / "tail-cheat" / "train.py"
    script.parent.mkdir()
    script.write_text(task.inputs[0].read_text() + TAIL_CHEAT)
    cheat = replace(task, inputs=(script,))
    params = {"cheat_per": str(per), "cheat_tail": str(tail), "cheat_until": str((n - 1) * per)}
    how = replace(workload, params={**workload.params, **params})
    ran = await lab.run(cheat, how)
    faking = running(how, cheat)
    honestly = lab.honest_probe(task, ran.files)

    async def answer(index: int, step: int) -> bytes:
        if index < n - 1:
            return await faking(index, step, ran.files[index - 1] if index else b"")
        return await honestly(index, step)

    share = Fraction(tail * (n - 1), workload.steps)
    return Variant(task, "skip_segment_tails", ran.files, n - 1, ran.points, share, probe=answer)


def render_garbage(task: Task, honest: list[bytes]) -> Variant:
    faked = ceil(len(honest) / 4)
    files = list(honest)
    for i in range(len(honest) // 4, len(honest) // 4 + faked):
        files[i] = honest[i][:64] + os.urandom(len(honest[i]) - 64)  # header kept, pixels garbage
    return Variant(task, "garbage_render_tiles", files, faked)


def state_hash(task: Task, file: bytes) -> bytes:
    """An exec task's checkpoint *is* its output tree hash; the others' are files to hash."""
    return file if task.name == "exec" else blake3(file).digest()


async def benchmark_trials(trials: int) -> tuple[int, int, int]:
    """(cheaters flagged, honest flagged, trials): the worker claims the score its own
    ``gpu bench`` saved (the best of five runs), or three times that if it lies; the
    sentry's seeded challenge re-measures (the best of two, real matmuls on this CPU)."""

    async def measure(seed: int, runs: int) -> gpubench.BenchResult:
        results = [await trio.to_thread.run_sync(gpubench.run, seed, 512, 8) for _ in range(runs)]
        return max(results, key=lambda r: r.score)

    claimed = (await measure(1, 5)).score
    flagged_cheat = flagged_honest = 0
    for trial in range(trials):
        seed = 1000 + trial
        worker = await measure(seed, 2)  # the worker answers the challenge
        proof_ok = worker.proof == (await measure(seed, 1)).proof  # the sentry recomputes
        flagged_honest += bool(benchmark_problem(claimed, worker.score, proof_ok))
        flagged_cheat += bool(benchmark_problem(3 * claimed, worker.score, proof_ok))
    return flagged_cheat, flagged_honest, trials


# --- the run ---------------------------------------------------------------------------------


def tasks(args: argparse.Namespace, box: Sandbox) -> dict[str, Task]:
    n, k = args.segments, args.steps_per_segment
    params = {"hidden": "16", "batch_size": "32", "lr": "0.01", "precision": "fp32"}
    found = {
        "train": Task(
            "train",
            TrainRuntime(box),
            Workload(
                kind="train", entry="train.py", steps=n * k, segments=n, seed=7, params=params
            ),
            (EXAMPLES / "train-tiny" / "train.py",),
            k,
            OtherClass(box) if args.cross_class else None,
        )
    }
    found["exec"] = Task(
        "exec",
        ExecRuntime(box),
        Workload(kind="exec", command=["python3", "count.py"], outputs=["out/"]),
        (EXAMPLES / "exec-wordcount" / "count.py", EXAMPLES / "exec-wordcount" / "text"),
    )
    try:
        import bpy  # noqa: F401, PLC0415 - optional: the render runtime's module
    except ImportError:
        print("render: bpy is not installed, render cheats skipped (pip install '.[render]')")
    else:
        tiles = {"samples": "4", "tiles": f"{args.tiles}x{args.tiles}", "threads": "1"}
        found["render"] = Task(
            "render",
            RenderRuntime(box),
            Workload(kind="render", entry="scene.py", frames="1", seed=1, params=tiles),
            (EXAMPLES / "render-scene" / "scene.py",),
        )
    return found


async def trials_of(
    lab: Lab, variant: Variant, args: argparse.Namespace, size: int, count: int
) -> list[tuple[float, int]]:
    return [await judge(lab, variant, t, size, args.deadline_ms) for t in range(count)]


async def main(args: argparse.Namespace) -> None:
    size = VerifySettings().sample_size
    box = Sandbox.create(args.sandbox, Limits(), readonly=python_paths())
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), trio.CapacityLimiter(args.parallel))
        lab.tolerance_ppm = args.tolerance_ppm
        found = tasks(args, box)
        honest: dict[str, Variant] = {}
        job_compute: dict[str, list[float]] = {}
        ran: dict[str, Ran] = {}
        for name, task in found.items():
            ran[name] = await lab.run(task)
            files, seconds = ran[name].files, ran[name].seconds
            hashes = [state_hash(task, f) for f in files]
            honest[name] = Variant(task, f"honest_{name}", files, 0, ran[name].points)
            job_compute[name] = seconds
            print(
                f"{name}: {len(files)} segments, {sum(seconds):.2f} s compute, "
                f"final 0x{hashes[-1].hex()[:12]}"
            )
        redo = await lab.run(found["train"])  # redundancy: everything twice
        redo_compute = redo.seconds
        assert redo.files == honest["train"].files, "two honest runs differ: not deterministic"
        cheats = [] if args.honest_only else await train_variants(lab, found["train"], ran["train"])
        if "render" in found and not args.honest_only:
            cheats.append(render_garbage(found["render"], honest["render"].files))
        if not args.honest_only:
            cheats.append(Variant(found["exec"], "garbage_exec_output", [os.urandom(32)], 1))
        spent: dict[str, list[tuple[float, int]]] = {}
        async with trio.open_nursery() as nursery:

            async def go(v: Variant, count: int) -> None:
                spent[v.kind] = await trials_of(lab, v, args, size, count)

            for v in cheats:
                nursery.start_soon(go, v, args.trials)
            for v in honest.values():
                nursery.start_soon(go, v, args.honest_trials)
        bench = (0, 0, 0) if args.honest_only else await benchmark_trials(args.bench_trials)
    hashed = sum(len(inner) for inner in ran["train"].points)
    count = common_points(ran["train"].points)[0]
    report(args, size, cheats, honest, job_compute, redo_compute, spent, lab, bench,
           (ran["train"].points_seconds, count, hashed))  # fmt: skip


def report(
    args: argparse.Namespace,
    size: int,
    cheats: list[Variant],
    honest: dict[str, Variant],
    job: dict[str, list[float]],
    redo: list[float],
    spent: dict[str, list[tuple[float, int]]],
    lab: Lab,
    bench: tuple[int, int, int],
    points: tuple[float, int, int],
) -> None:
    if args.cross_class:
        tolerance = lab.tolerance_ppm
        print(
            f"\nsentry: sample_size {size} + the final segment; train replayed in another "
            f"class (ATEN_CPU_CAPABILITY=default), distance tolerance {tolerance} ppm"
        )
        show_distances(lab)
    else:
        print(f"\nsentry: sample_size {size} + the final segment, same class (bitwise)")
    print(
        f"{'cheat':<22} {'runtime':<7} {'faked':>9} {'trials':>6} {'caught':>6} {'rate':>7} "
        f"{'P(rule)':>8} {'replays':>7} {'bisected':>8}"
    )
    rates = []
    for v in cheats:
        n = len(v.files)
        p = rule_probability(v, size)
        rate = 100 * v.caught / max(v.trials, 1)
        if (v.share if v.share is not None else Fraction(v.faked, n)) >= Fraction(1, 4):
            rates.append(rate)
        faked = f"{v.faked:>3}/{n:<5}" if v.share is None else f"{float(v.share) * 100:>8.1f}%"
        print(
            f"{v.kind:<22} {v.task.name:<7} {faked} {v.trials:>6} {v.caught:>6} "
            f"{rate:>6.1f}% {float(p) * 100:>7.2f}% {v.replays:>7} {v.bisected:>8}"
        )
    caught_b, honest_b, trials_b = bench
    if trials_b:
        print(
            f"{'misstated_benchmark':<22} {'bench':<7} {'3x':>9} {trials_b:>6} {caught_b:>6} "
            f"{100 * caught_b / trials_b:>6.1f}%"
        )
        rates.append(100 * caught_b / trials_b)
    escalated = sum(v.escalated for v in [*cheats, *honest.values()])
    print(f"cross-class misses left to a same-class sentry (caught, for cheats): {escalated}")
    bis = lab.bisections
    if bis.runs:
        honest_bisected = sum(v.bisected for v in honest.values())
        print(
            f"bisections: {bis.runs} missed segments narrowed to one step with {bis.probes} "
            f"probes ({honest_bisected} games of honest workers among them); the sentry's "
            f"side took {bis.seconds:.0f} s wall, process start-up included"
        )
        for reason in sorted(set(bis.steps))[:8]:
            print(f"  failed: {reason[:110]}")
    false_positives = sum(v.caught - v.escalated for v in honest.values()) + honest_b
    honest_trials = sum(v.trials for v in honest.values()) + trials_b
    print(f"honest workers failed: {false_positives} of {honest_trials} verdicts")
    overhead(args, size, job, redo, spent, lab, rates, false_positives, points)


def rule_probability(v: Variant, size: int) -> Fraction:
    """The chance the public rule catches ``v``: whole faked segments are caught at any stop
    (hypergeometric); a cheat inside segments (``share``) by a stop past its first faked
    step, the bound of :mod:`consensus.verify.sampling` (exact for equal tails)."""
    n = len(v.files)
    if v.refuses:
        return Fraction(1)
    if v.share is not None:
        return detection_probability(n, v.share, size, common_points(v.points)[0])
    return detection_probability(n, Fraction(v.faked, n), size)


def show_distances(lab: Lab) -> None:
    """The cross-class distances the sentry measured, per worker (None: hashes equal, or none
    measurable)."""
    for kind, values in sorted(lab.distances.items()):
        known = sorted(v for v in values if v is not None)
        if known:
            print(f"  distances {kind:<22} min {known[0]:>7} ppm, max {known[-1]:>7} ppm "
                  f"over {len(known)} replays")  # fmt: skip


def overhead(
    args: argparse.Namespace,
    size: int,
    job: dict[str, list[float]],
    redo: list[float],
    spent: dict[str, list[tuple[float, int]]],
    lab: Lab,
    rates: list[float],
    false_positives: int,
    points: tuple[float, int, int],
) -> None:
    """Verification's cost next to the job's: the sentry's replays (to the drawn stops) plus
    the worker's time writing its points, measured on the run's job and modelled for longer
    ones from the measured cost of a replayed step."""
    train = job["train"]
    # The job's compute: the mean of the two honest runs (the redundancy run is the second), so
    # the baseline is a measured figure around 100 %, not 100 % by definition.
    per_job = (sum(train) + sum(redo)) / 2
    per_seg, per = per_job / len(train), args.steps_per_segment
    trials = spent["honest_train"]
    replay_s = sum(t[0] for t in trials) / len(trials)
    step_s = replay_s / max(1, sum(t[1] for t in trials) / len(trials))
    # the worker's time hashing points, the count it settled on, the points it hashed
    points_s, m, hashed = points
    point_cost = points_s / max(hashed, 1) / per_seg  # one point, in segments of compute
    redundancy = 100 * sum(redo) / per_job
    starts = sum(lab.starts) / max(len(lab.starts), 1)
    print(
        f"\ntrain compute per step: job {per_seg / per * 1000:.2f} ms, replay "
        f"{step_s * 1000:.2f} ms (a replay's first steps warm up a fresh process); "
        f"process start per replay (fixed, not compute): {starts:.2f} s over "
        f"{len(lab.starts)} replays"
    )
    print(
        f"points: hashing one cost {point_cost * 100:.3f} % of a segment's compute; the worker "
        f"settled on {m} a segment (first {POINTS['train']}), {100 * points_s / per_job:.2f} % "
        f"of the job; a drawn stop replays {stop_share(per, m) * 100:.1f} % of a segment"
    )
    measured = 100 * (replay_s + points_s) / per_job
    print(
        f"verification of a {len(train)}-segment train job: {measured:.1f} % of its compute; "
        f"redundancy (run twice, measured): {redundancy:.1f} %"
    )
    modelled = {}
    for n in (256, 512, 1024):  # the worker's rule at n segments, with the measured costs
        count = choose_points(point_cost, n, size, POINTS["train"])
        replayed = min(size, n - 1) * stop_share(per, count) + 1  # the final one whole
        hashing = (count - 1) * point_cost + (POINTS["train"] - count) * point_cost / n
        modelled[n] = 100 * (replayed * per * step_s / (n * per_seg) + hashing)
        print(
            f"  modelled {n}-segment job: {count} points, {replayed:.1f} segments' worth "
            f"replayed + {100 * hashing:.2f} % hashing = {modelled[n]:.1f} % "
            f"(ratio {modelled[n] / redundancy:.3f} of redundancy)"
        )
    for name in ("render", "exec"):
        if name in spent and name in job:
            cost = 100 * sum(t[0] for t in spent[f"honest_{name}"]) / len(spent[f"honest_{name}"])
            print(f"{name}: verification {cost / sum(job[name]):.0f} % of a "
                  f"{len(job[name])}-segment job")  # fmt: skip
    detect = f"detect_min_pct={min(rates):.1f} " if rates else ""  # none: --honest-only
    print(
        f"RESULT {detect}false_positives={false_positives} "
        f"overhead_pct={modelled[args.model_segments]:.2f} "
        f"redundancy_overhead_pct={redundancy:.1f} "
        f"measured_overhead_pct={measured:.2f} measured_segments={len(train)}"
    )


def stop_share(steps: int, points: int) -> float:
    """The share of a segment of ``steps`` steps that a replay to a drawn stop runs, on
    average, with ``points`` points (1: the whole segment)."""
    ends = (point_step(0, steps, -(-u * points // steps), points) for u in range(1, steps + 1))
    return sum(ends) / steps**2


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32, help="train job segments (real)")
    parser.add_argument("--steps-per-segment", type=int, default=1000)
    parser.add_argument("--tiles", type=int, default=2, help="render tiles per side (real)")
    parser.add_argument("--trials", type=int, default=3, help="seeds per cheat")
    parser.add_argument("--honest-trials", type=int, default=1)
    parser.add_argument("--bench-trials", type=int, default=3)
    parser.add_argument("--deadline-ms", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=2, help="runtime processes at once")
    parser.add_argument("--model-segments", type=int, default=256, choices=(256, 512, 1024))
    parser.add_argument("--sandbox", default="bwrap", choices=("bwrap", "limits"))
    parser.add_argument(
        "--cross-class", action="store_true", help="sentry replays train in another class"
    )
    parser.add_argument(
        "--honest-only",
        action="store_true",
        help="no cheats: the honest runs, their checks and the overhead (e.g. --segments 256)",
    )
    parser.add_argument(
        "--tolerance-ppm",
        type=int,
        default=VerifySettings().tolerance_ppm,
        help="cross-class tolerance (0: every honest cross-class segment misses and is bisected)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse())
