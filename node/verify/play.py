"""Driving one :class:`~consensus.verify.game.Game`: ask the worker, replay, decide.

Shared by the sentry service and ``bench/cheaters.py``: the caller supplies how to ask the
worker for segment ``i`` (over the network, or from a cheater's files in the bench) and how to
replay a segment (the real runtime). Challenges are answered one at a time in a seed-shuffled
order and the game stops at the first failure, so a cheat is usually caught after a few
replays while an honest run is replayed on every sampled segment.

A replay in another determinism class than the worker's is given the worker's end file of the
segment: where the hashes differ, the runtime measures the distance between its state and that
file in the sandbox (a runtime without a distance, ``exec``, gives none: a miss).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from blake3 import blake3

from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import Attestation, ChallengeResponse, Leaf
from consensus.verify.sampling import point_step, stops, uses_points
from gpu.runtime import RunSpec
from gpu.segmented import BadSegment

Ask = Callable[[int], Awaitable[ChallengeResponse | None]]  # None: refused or silent
# Fetches the files an answer sent by reference; None: the worker did not serve them
Complete = Callable[[ChallengeResponse], Awaitable[ChallengeResponse | None]]
# (segment, start checkpoint, the worker's end file or b"", the inner point to stop at or 0)
# -> (state hash, distance in ppm)
ReplayFn = Callable[[int, bytes, bytes, int], Awaitable[tuple[bytes, int | None]]]
Clock = Callable[[], int]

NO_STATE = bytes(32)  # what a replay that cannot even start "produces": never a real hash


async def play(
    game: g.Game, ask: Ask, replay: ReplayFn, now_ms: Clock, complete: Complete | None = None
) -> g.Decide | g.Escalate:
    """Runs the game to its decision; the worker's silence past the deadline fails it.

    Every sampled segment is asked for at once (answering is cheap for an honest worker), each
    answer stamped with its arrival time; the replays follow, in a public seed-shuffled order,
    so the sentry's own slowness never makes a worker miss its deadline. A big checkpoint
    file comes by reference in the answer and is fetched (``complete``) when its segment's
    turn comes, outside the answer deadline: moving it takes as long as its size.
    """
    order = [e.index for e in game.start() if isinstance(e, g.Challenge)]
    random.Random(game.att_id).shuffle(order)  # noqa: S311 - a public order, not a secret
    answers: dict[int, tuple[ChallengeResponse | None, int]] = {}

    async def fetch(index: int) -> None:
        answer = await ask(index)
        answers[index] = (answer, now_ms())

    with trio.move_on_after(max(0, game.deadline_ms - now_ms()) / 1000):
        async with trio.open_nursery() as nursery:
            for index in order:
                nursery.start_soon(fetch, index)
    for index in order:
        got = answers.get(index)
        if got is not None and got[0] is not None and complete is not None:
            got = (await complete(got[0]), got[1])  # None: a file it referenced, not served
        decided = await _judge(game, index, got, replay, now_ms)
        if decided is not None:
            return decided
    raise AssertionError(f"the game ended in {game.state} without a decision")


async def _judge(
    game: g.Game,
    index: int,
    got: tuple[ChallengeResponse | None, int] | None,
    replay: ReplayFn,
    now_ms: Clock,
) -> g.Decide | g.Escalate | None:
    if got is None:  # nothing before the deadline: silence
        effects = game.on_tick(max(now_ms(), game.deadline_ms))
    elif got[0] is None:
        effects = game.handle(g.Refused(index, "no answer"), got[1])
    else:
        effects = game.handle(g.Answered(got[0]), got[1])
    decided: list[g.Decide | g.Escalate] = []
    while effects:  # a replay's outcome may ask for another (a miss is replayed twice)
        effect = effects.pop(0)
        if isinstance(effect, g.Replay):
            state, distance = await replay(effect.index, effect.checkpoint, effect.end, effect.stop)
            effects += game.handle(g.Replayed(effect.index, state, distance), now_ms())
        elif isinstance(effect, g.Decide | g.Escalate):
            decided.append(effect)
    return decided[0] if decided else None


def stops_of(att: Attestation, seed: bytes, sampled: list[int]) -> dict[int, int]:
    """The point each sampled segment's replay stops at (:func:`~consensus.verify.sampling.
    stops`); empty (whole segments) for an attestation without points, one whose workload
    does not say how its steps split, or one short enough that every segment is sampled."""
    workload = att.workload
    if att.points == 1 or workload is None or workload.segments != att.segments:
        return {}
    if not uses_points(att.segments - att.first, len(sampled) - 1):
        return {}  # every segment is sampled: replayed whole
    if workload.steps < workload.segments:
        return {}
    return dict(zip(sampled, stops(seed, sampled, att.segments, att.points, workload.steps),
                    strict=True))  # fmt: skip


def stop_step(att: Attestation, index: int, stop: int) -> int | None:
    """The global step a replay of segment ``index`` stops after for inner point ``stop``;
    None for the whole segment (``stop`` 0)."""
    if not stop or att.workload is None:
        return None
    steps, segments = att.workload.steps, att.workload.segments
    begin, end = index * steps // segments, (index + 1) * steps // segments
    return point_step(begin, end, stop, att.points)


def answer_from_files(
    att: Attestation, files: list[Path], index: int, *, with_end: bool = False
) -> ChallengeResponse:
    """The worker's honest answer from its kept checkpoint files (one per segment)."""
    hashes = [blake3(f.read_bytes()).digest() for f in files]
    return answer_from(att, hashes, lambda i: files[i].read_bytes(), index, with_end=with_end)


def answer_from(
    att: Attestation,
    hashes: list[bytes],
    read: Callable[[int], bytes],
    index: int,
    *,
    with_end: bool = False,
    points: list[list[bytes]] | None = None,
) -> ChallengeResponse:
    """The answer for segment ``index`` from the attested segments' state ``hashes``
    (``att.first`` onwards) and ``read``, which gives segment ``i``'s checkpoint file (for a
    resumed attestation, ``att.first - 1`` is the resume checkpoint the worker fetched);
    ``with_end``: with segment ``index``'s own file, for a cross-class sentry; ``points``:
    each attested segment's inner point hashes, for an attestation with points."""
    first, start = att.first, att.start
    chained = tree.GENESIS if start is None else start.chained
    leaves = tree.chain_leaves(hashes, chained, first, points if att.points > 1 else None)
    levels = tree.levels(leaves, first)
    before: Leaf | None = None
    before_proof: list[bytes] = []
    if index == first:
        before = start  # None from the inputs; else signed in the attestation, no proof
    else:
        before = leaves[index - 1 - first]
        before_proof = tree.proof(levels, index - 1, first)
    return ChallengeResponse(
        ref=att.ref,
        index=index,
        before=before,
        before_proof=before_proof,
        after=leaves[index - first],
        after_proof=tree.proof(levels, index, first),
        checkpoint=read(index - 1) if index else b"",
        end_checkpoint=read(index) if with_end else b"",
        points=list(points[index - first]) if points is not None and att.points > 1 else [],
    )


async def replay_segment(
    runtime: object,
    spec: RunSpec,
    index: int,
    start: bytes,
    on_log: Callable[[str], None],
    *,
    gpus: tuple[int, ...] = (),
    end: bytes = b"",
    stop_step: int | None = None,
) -> tuple[bytes, int | None]:
    """Replays ``index`` with ``runtime`` (a SegmentedRuntime or ExecRuntime) in ``spec.workdir``:
    the state hash, and its distance to ``end`` (the worker's end file) when one was given, the
    hashes differ and the runtime measures distances (else None). ``stop_step``: stop after
    that global step, at one of the segment's inner points (a same-class replay).

    A segment runtime resumes from ``start`` (written next to the work dir); an exec task is one
    segment, re-run whole. A replay that fails (a checkpoint that does not load) yields
    :data:`NO_STATE`, which matches no attested hash, and no distance.
    """
    replay = getattr(runtime, "replay", None)
    if replay is None:
        return await _rerun_exec(runtime, spec, on_log, gpus), None
    name = spec.workdir.name  # the files go next to the work dir, out of the jail's reach
    kept = spec.workdir.with_name(f"{name}.end.ckpt")
    measure = bool(end) and hasattr(runtime, "distance")
    keep: dict[str, Any] = {"keep_as": kept} if measure else {}  # none without distances
    if stop_step is not None:
        keep["stop_step"] = stop_step
    try:
        with _resumed(spec, index, start) as from_start:
            got: bytes = await replay(from_start, on_log, gpus, **keep)
        if not measure or got == blake3(end).digest():
            return got, None
        apart = spec.workdir.with_name(f"{name}.distance")  # a fresh jail, not the job's dir
        return got, await runtime.distance(apart, kept, end, on_log)  # type: ignore[attr-defined]
    except BadSegment:
        return NO_STATE, None
    finally:
        kept.unlink(missing_ok=True)


@contextmanager
def _resumed(spec: RunSpec, index: int, start: bytes) -> Iterator[RunSpec]:
    """``spec`` resuming segment ``index`` from ``start``, written next to the work dir (out of
    the jail's reach) for the replay's duration; from the task's inputs when segment 0 starts
    with nothing."""
    resume = spec.workdir.with_name(f"{spec.workdir.name}.start.ckpt") if start or index else None
    if resume is not None:
        resume.write_bytes(start)
    try:
        yield RunSpec(spec.task, spec.workload, spec.workdir, resume, index - 1)
    finally:
        if resume is not None:
            resume.unlink(missing_ok=True)


async def replay_to(
    runtime: Any,
    spec: RunSpec,
    index: int,
    start: bytes,
    stop_step: int,
    *,
    keep_as: Path,
    on_log: Callable[[str], None],
    gpus: tuple[int, ...] = (),
) -> bool:
    """Replays segment ``index`` from ``start`` (a state file's bytes: a checkpoint, or a
    state from inside the segment; empty from the task's inputs) up to global step
    ``stop_step``, with a runtime that :attr:`~gpu.segmented.SegmentedRuntime.bisects`; the
    state file is copied to ``keep_as``. False when the replay fails (a state that does not
    load, a step outside the segment): the log says why."""
    try:
        with _resumed(spec, index, start) as from_start:
            await runtime.replay(from_start, on_log, gpus, keep_as=keep_as, stop_step=stop_step)
    except BadSegment:
        return False
    return True


async def _rerun_exec(
    runtime: object, spec: RunSpec, on_log: Callable[[str], None], gpus: tuple[int, ...]
) -> bytes:
    got: list[bytes] = []

    async def keep(done: object) -> None:
        got.append(done.hash)  # type: ignore[attr-defined]

    result = await runtime.run(spec, keep, on_log, gpus)  # type: ignore[attr-defined]
    return got[0] if result.ok and got else NO_STATE
