"""Bisection in the cheating-worker bench (``bench/cheaters.py --cross-class``).

A cross-class miss is not left to a same-class sentry that may not exist: as the node's sentry
does (:mod:`node.verify.bisector`), the bench narrows each missed segment to one step with the
real machine (:class:`consensus.verify.bisection.Bisection`) and real runtimes. The worker
answers each probe with its state after that step, made the way its cheat would make it (an
honest worker replays its own segment in its own class); the sentry replays to the same step
in its class and measures the distance; at one step apart it runs that step from the worker's
own state. What a bisection costs the sentry (its replays and measurements, process start-up
included) is counted apart from the game's replays.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from blake3 import blake3

from config.schema import VerifySettings
from consensus.market.messages import Workload
from consensus.verify import bisection as b
from consensus.verify import game as g
from gpu.runtime import RunSpec
from node.verify.play import replay_to

# (segment, global step) -> the worker's state file after that step
ProbeAnswer = Callable[[int, int], Awaitable[bytes]]


@dataclass
class Bisections:
    """What bisecting cost and found, over a bench run."""

    runs: int = 0
    probes: int = 0
    seconds: float = 0.0  # the sentry's side: replays and measurements, wall
    steps: list[str] = field(default_factory=list)  # the failing steps found, for the report


@dataclass
class StateMaker:
    """Runs a runtime up to a step inside a segment, each distinct run once."""

    workdir: Callable[[Any], Path]  # a fresh copy of the task's files
    limiter: trio.CapacityLimiter  # runtime processes at once
    cache: dict[bytes, bytes | None] = field(default_factory=dict)

    async def state_after(
        self, task: Any, runtime: Any, workload: Workload, index: int, start: bytes, step: int
    ) -> bytes | None:
        """The state file after global ``step``, run from ``start``; None when the run fails
        (``start`` does not load, or is not this segment's start: a cheat's own file)."""
        key = blake3(repr((type(runtime).__name__, workload, index, step)).encode() + start)
        digest = key.digest()
        if digest not in self.cache:
            workdir = self.workdir(task)
            kept = workdir.with_name(f"{workdir.name}.probe.ckpt")
            spec = RunSpec(f"{task.name} probe", workload, workdir)
            async with self.limiter:
                ok = await replay_to(runtime, spec, index, start, step, keep_as=kept,
                                     on_log=lambda _line: None)  # fmt: skip
            self.cache[digest] = kept.read_bytes() if ok else None
            kept.unlink(missing_ok=True)
        return self.cache[digest]


async def bisect(
    maker: StateMaker,
    task: Any,
    files: list[bytes],
    up: g.Escalate,
    answer: ProbeAnswer,
    tally: Bisections,
    tolerance_ppm: int,
) -> g.Decide | None:
    """The verdict on an escalated game: a fail on the first missed segment whose one step
    fails, a pass when every missed segment's step check passes; None when our own replay or
    measurement failed (as the node, no verdict rather than a wrong one). A probe agrees
    within ``tolerance_ppm``; the step check uses ``verify.step_tolerance_ppm``."""
    settings = VerifySettings()
    passes = []
    for miss in up.misses:
        first, last = task.runtime.steps_of(task.workload, miss.index)
        start = files[miss.index - 1] if miss.index else b""
        machine = b.Bisection(b"bench", miss.index, first, last,
                              blake3(start).digest(), blake3(files[miss.index]).digest(),
                              tolerance_ppm, settings.step_tolerance_ppm)  # fmt: skip
        states = {first: start, last: files[miss.index]}
        tally.runs += 1
        decision = await _run(maker, task, miss.index, machine, states, answer, tally)
        if decision is None or not decision.passed:
            if decision is not None:
                tally.steps.append(decision.reason)
            return decision
        passes.append(decision)
    return g.Decide(True, "; ".join(d.reason for d in passes), b"")


async def _run(
    maker: StateMaker,
    task: Any,
    index: int,
    machine: b.Bisection,
    states: dict[int, bytes],
    answer: ProbeAnswer,
    tally: Bisections,
) -> g.Decide | None:
    effects = machine.start()
    first = machine.first
    while True:
        [effect] = effects
        if isinstance(effect, g.Decide):
            return effect
        started = time.perf_counter()
        if isinstance(effect, b.Probe):
            tally.probes += 1
            claimed = await answer(index, effect.step)
            states[effect.step] = claimed
            event: b.Event | None = None
            mine = await _sentry_state(maker, task, index, states[first], effect.step)
            ppm = None if mine is None else await _distance(maker, task, mine, claimed)
            if ppm is not None:
                event = b.Probed(effect.step, blake3(claimed).digest(), ppm)
        else:
            event = await _step(maker, task, index, states, effect)
        tally.seconds += time.perf_counter() - started
        if event is None:
            return None
        effects = machine.handle(event)


async def _step(
    maker: StateMaker, task: Any, index: int, states: dict[int, bytes], check: b.CheckStep
) -> b.Event | None:
    """One step from the worker's own state at ``lo``, against its state at ``hi``; None
    when our replay from it fails (as the node: no verdict)."""
    lo, hi = states[check.lo], states[check.hi]
    mine = await _sentry_state(maker, task, index, lo, check.hi)
    if mine is None:
        return None
    off = await _distance(maker, task, mine, hi)
    moved = await _distance(maker, task, mine, lo, moved=True)
    return None if off is None or moved is None else b.Stepped(blake3(mine).digest(), off, moved)


async def _sentry_state(
    maker: StateMaker, task: Any, index: int, start: bytes, step: int
) -> bytes | None:
    return await maker.state_after(task, task.sentry, task.workload, index, start, step)


async def _distance(
    maker: StateMaker, task: Any, mine: bytes, claimed: bytes, *, moved: bool = False
) -> int | None:
    """The sentry's runtime measures its state against the worker's (random states must be
    equal too, as in the node's bisection; ``moved``: how far one step moved a state)."""
    work = maker.workdir(task)
    replayed = work.with_name(f"{work.name}.replayed.ckpt")
    replayed.write_bytes(mine)
    try:
        async with maker.limiter:
            ppm: int | None = await task.sentry.measure(
                work.with_name(f"{work.name}.distance"), replayed, claimed, lambda _line: None,
                rng=not moved, moved=moved,
            )  # fmt: skip
    finally:
        replayed.unlink()
    return ppm
