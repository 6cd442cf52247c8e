"""Runtimes that drive a child process through segments, each closed by a hashed checkpoint.

The child (one per runtime: :mod:`gpu.train_child`, :mod:`gpu.render_child`) runs in the
sandbox, writes each segment's canonical state to ``.idlegrid/seg-<i>.ckpt`` in its task
directory and reports it on a private pipe. This side moves each checkpoint out of the jail
before hashing it (BLAKE3), so the workload cannot rewrite history, chains the hash to the
previous one, and hands it to the market. :meth:`SegmentedRuntime.replay` re-runs one segment
from a checkpoint and returns the resulting hash (keeping the state file where asked): what a
verifier calls. :meth:`SegmentedRuntime.distance` runs the child in the sandbox once more, in
its ``distance`` mode, to measure how far a replayed state is from the worker's claimed one (a
verifier in another determinism class compares that to a tolerance, not hashes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from blake3 import blake3

from consensus.market.messages import Workload
from gpu.exec_runtime import exit_reason, workload_env
from gpu.runtime import (
    OnLog,
    OnSegment,
    RunResult,
    RunSpec,
    SegmentDone,
    UnsafeOutput,
    chain,
    regular_file,
    run_logged,
)
from gpu.sandbox import Sandbox

CONTROL_DIR = ".idlegrid"  # in the task dir: where the child writes checkpoints
MAX_CONTROL_LINE = 4096
FAR = 1_000_000  # ppm: a distance that could not be measured (as the children's FAR)
_DISTANCE = re.compile(r"distance_ppm (\d{1,7})")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")


class BadSegment(Exception):
    """The child reported a segment out of order or a checkpoint that is not where it says."""


def file_hash(path: Path) -> bytes:
    return blake3(path.read_bytes(), max_threads=blake3.AUTO).digest()


class SegmentedRuntime:
    """The common driver; a subclass names its child program and the arguments it takes.

    ``points``: the most states each segment of a run commits to (the last is its end; see
    :mod:`consensus.verify.sampling`); the child reports the inner ones' hashes (of the state
    file it does not write), and lowers the count once it has measured their cost against
    the steps (``sample``, the sentries' sample size, says what they save). Replays report
    none.
    """

    kinds: frozenset[str] = frozenset()
    child: Path
    points: int = 1  # the most a segment commits to; the child may lower it as it measures

    def check(self, spec: RunSpec) -> str:
        """Why ``spec`` cannot run, or ``""``."""
        raise NotImplementedError

    def child_args(self, spec: RunSpec) -> dict[str, Any]:
        """The child's own arguments (the driver adds segments, resume and the pipe)."""
        raise NotImplementedError

    def child_env(self, spec: RunSpec) -> dict[str, str]:
        return {}

    def bisects(self, workload: Workload) -> bool:
        """Whether a cross-class miss on this workload can be bisected to one step
        (:mod:`consensus.verify.bisection`): a replay stops inside a segment (``replay``'s
        ``stop_step``, :meth:`steps_of`) and one step's rounding is measured small."""
        return False

    def steps_of(self, workload: Workload, index: int) -> tuple[int, int]:
        """The global steps segment ``index`` runs from and to (a runtime that bisects)."""
        raise NotImplementedError

    def __init__(self, sandbox: Sandbox, python: str = sys.executable, sample: int = 16) -> None:
        self.sandbox, self.python = sandbox, python
        self.sample = sample  # the sentries' sample size: what points save is weighed with it

    async def run(
        self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog, gpus: tuple[int, ...] = ()
    ) -> RunResult:
        return await self._run(spec, on_segment, on_log, gpus, None)

    async def replay(
        self,
        spec: RunSpec,
        on_log: OnLog,
        gpus: tuple[int, ...] = (),
        keep_as: Path | None = None,
        stop_step: int | None = None,
    ) -> bytes:
        """The state hash after segment ``spec.resume_index + 1``, run from ``spec.resume``;
        its state file is copied to ``keep_as`` when given (to measure a distance against).

        ``stop_step`` (a runtime that :meth:`bisects`): stop inside that segment, after that
        global step, for a bisection's probe. ``spec.resume`` may then be a state from inside
        the segment too (one step from the worker's state at a probe).

        Raises:
            BadSegment: the replay failed (the log says why).
        """
        got: list[SegmentDone] = []

        async def keep(done: SegmentDone) -> None:
            got.append(done)
            if keep_as is not None:  # the private copy goes when the run ends
                await trio.to_thread.run_sync(shutil.copyfile, done.checkpoint, keep_as)

        result = await self._run(spec, keep, on_log, gpus, spec.resume_index + 1,
                                 stop_step=stop_step)  # fmt: skip
        if not result.ok or len(got) != 1:
            raise BadSegment(f"replay of segment {spec.resume_index + 1} failed: {result.error}")
        return got[0].hash

    async def distance(self, workdir: Path, replayed: Path, claimed: bytes, on_log: OnLog) -> int:
        """How far the state in ``replayed`` is from the worker's ``claimed`` file, in parts
        per million (the child's ``distance`` mode, in the sandbox, in a fresh ``workdir``):
        :data:`FAR` when either does not load, they do not compare, or the child fails."""
        measured = await self.measure(workdir, replayed, claimed, on_log)
        return FAR if measured is None else measured

    async def measure(self, workdir: Path, replayed: Path, claimed: bytes, on_log: OnLog, *,
                      rng: bool = False, moved: bool = False) -> int | None:  # fmt: skip
        """:meth:`distance`, but None when the child itself fails (our trouble, not the
        claimed file's, which the child measures as :data:`FAR`); ``rng``: the random states
        must be equal too (a bisection's comparisons); ``moved``: how far one step moved a
        state (the two are of different steps)."""
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / CONTROL_DIR).mkdir(parents=True)
        shutil.copyfile(replayed, workdir / CONTROL_DIR / "replayed.ckpt")
        (workdir / CONTROL_DIR / "claimed.ckpt").write_bytes(claimed)
        args = {"mode": "distance", "replayed": f"{CONTROL_DIR}/replayed.ckpt",
                "claimed": f"{CONTROL_DIR}/claimed.ckpt", "rng": rng, "moved": moved}  # fmt: skip
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
        jail = self.sandbox.prepare([self.python, "-I", str(self.child), json.dumps(args)],
                                    workdir, env)  # fmt: skip
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            on_log(line)

        try:
            code = await run_logged(jail.argv, jail.cwd, jail.env, log, **jail.popen)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        found = [m for line in lines if (m := _DISTANCE.fullmatch(line.strip()))]
        return min(FAR, int(found[-1].group(1))) if code == 0 and found else None

    async def _run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog,
                   gpus: tuple[int, ...], stop_after: int | None, *,
                   stop_step: int | None = None) -> RunResult:  # fmt: skip
        problem = self.check(spec)
        if problem:
            return RunResult(False, problem)
        control = spec.workdir / CONTROL_DIR
        shutil.rmtree(control, ignore_errors=True)
        control.mkdir()
        private = spec.workdir.parent / f"{spec.workdir.name}.checkpoints"
        private.mkdir(mode=0o700, exist_ok=True)
        if spec.resume is not None:
            shutil.copyfile(spec.resume, control / "resume.ckpt")
        pipe = _Pipe()
        try:
            jail = self._jail(spec, gpus, stop_after, pipe.write_fd, stop_step)
            points = self.points if stop_after is None else 1
            progress = _Progress(spec, private, points)
            return await self._drive(jail, pipe, progress, on_segment, on_log)
        finally:
            pipe.close()
            shutil.rmtree(private, ignore_errors=True)

    def _jail(self, spec: RunSpec, gpus: tuple[int, ...], stop_after: int | None,
              write_fd: int, stop_step: int | None) -> Any:  # fmt: skip
        args = {
            **self.child_args(spec), "ckpt_dir": CONTROL_DIR,
            "resume": f"{CONTROL_DIR}/resume.ckpt" if spec.resume is not None else None,
            "resume_index": spec.resume_index, "stop_after": stop_after, "control_fd": write_fd,
            "points": self.points if stop_after is None else 1, "sample": self.sample,
        }  # fmt: skip
        if stop_step is not None:
            args["stop_step"] = stop_step
        env = {**workload_env(spec, gpus), "PYTHONHASHSEED": "0", **self.child_env(spec)}
        command = [self.python, "-I", str(self.child), json.dumps(args)]
        jail = self.sandbox.prepare(command, spec.workdir, env, network=spec.workload.network,
                                    gpus=gpus, shared=tuple(spec.workload.datasets))  # fmt: skip
        jail.popen["pass_fds"] = (write_fd,)
        return jail

    async def _drive(self, jail: Any, pipe: _Pipe, progress: _Progress,
                     on_segment: OnSegment, on_log: OnLog) -> RunResult:  # fmt: skip
        errors: list[str] = []
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                try:
                    async for report in _lines(pipe.read_fd):
                        done = await progress.collect(report)
                        if done is not None:
                            await on_segment(done)
                except BadSegment as exc:
                    errors.append(str(exc))
                    nursery.cancel_scope.cancel()

            nursery.start_soon(follow)
            try:
                code = await run_logged(jail.argv, jail.cwd, jail.env, on_log,
                                        freezer=progress.spec.freezer, **jail.popen)  # fmt: skip
            finally:
                pipe.close_write()  # our copy: the child's exit then reaches follow() as EOF
        if errors:
            return RunResult(False, errors[0])
        if code != 0:
            return RunResult(False, exit_reason(code, "python"))
        return RunResult(True, result_hash=progress.last_hash)


@dataclass
class _Progress:
    """The chain so far, and where the checkpoints are kept out of the jail's reach."""

    spec: RunSpec
    private: Path
    points: int = 1  # states per segment the child reports (its inner ones, then its end)
    started: float = field(default_factory=trio.current_time)
    chained: bytes = b""
    next: int = 0
    last_hash: bytes = b""
    inner: list[bytes] = field(default_factory=list)  # this segment's point hashes so far

    def __post_init__(self) -> None:
        self.chained, self.next = self.spec.resume_chained, self.spec.resume_index + 1

    async def collect(self, report: dict[str, Any]) -> SegmentDone | None:
        """The segment a report closes, or None for one of its inner points (kept here)."""
        index = report.get("segment")
        if "point" in report:
            await self._point(report)
            return None
        if index != self.next or report.get("file") != f"{CONTROL_DIR}/seg-{index}.ckpt":
            raise BadSegment(f"the child reported {report!r}, expected segment {self.next}")
        count = report.get("points", 1)
        if not isinstance(count, int) or count < 1 or self.points % count:
            raise BadSegment(f"segment {index}: {count!r} points, not a divisor of {self.points}")
        if len(self.inner) != count - 1:
            raise BadSegment(f"segment {index} ended after {len(self.inner)} inner points")
        kept = self.private / f"seg-{index}.ckpt"
        digest = await self._take(report["file"], kept, f"checkpoint of segment {index}")
        self.chained = chain(self.chained, digest)
        self.next, self.last_hash = index + 1, digest
        seconds = int(trio.current_time() - self.started)
        points, self.inner = tuple(self.inner), []
        return SegmentDone(index, digest, self.chained, seconds, kept, points)

    async def _point(self, report: dict[str, Any]) -> None:
        """An inner point's hash, as the child computed it (no file: writing one per point
        cost the worker more than the replays it saves; see ``train_child``)."""
        index, point = self.next, len(self.inner) + 1
        if (report.get("segment"), report.get("point")) != (index, point) or point >= self.points:
            raise BadSegment(f"the child reported {report!r}, expected point {point} of {index}")
        digest = report.get("hash")
        if not isinstance(digest, str) or not _HEX_HASH.fullmatch(digest):
            raise BadSegment(f"the child reported {report!r} for point {point} of {index}")
        self.inner.append(bytes.fromhex(digest))

    async def _take(self, reported: str, kept: Path, what: str) -> bytes:
        """Moves a state file the child reported out of the jail to ``kept``; its hash."""
        try:  # a link would make us read (and publish) whatever it points to, as ourselves
            regular_file(self.spec.workdir, reported).replace(kept)  # out of reach first
            regular_file(self.private, kept.name)
        except OSError as exc:
            raise BadSegment(f"{what} missing: {exc.strerror}") from None
        except UnsafeOutput as exc:
            raise BadSegment(f"{what} refused: {exc}") from None
        return await trio.to_thread.run_sync(file_hash, kept)


async def _lines(fd: int) -> Any:
    """JSON reports from the control pipe, one per line."""
    stream = trio.lowlevel.FdStream(os.dup(fd))
    buffer = b""
    async with stream:
        while data := await stream.receive_some():
            *lines, buffer = (buffer + data).split(b"\n")
            if len(buffer) > MAX_CONTROL_LINE:
                raise BadSegment("the child's control line is too long")
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    raise BadSegment(f"unreadable control line {line[:80]!r}") from None


class _Pipe:
    """The control pipe: the child writes reports, we read them; each end closed once."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self._open = {self.read_fd, self.write_fd}

    def close_write(self) -> None:
        if self.write_fd in self._open:
            self._open.discard(self.write_fd)
            os.close(self.write_fd)

    def close(self) -> None:
        self.close_write()
        if self.read_fd in self._open:
            self._open.discard(self.read_fd)
            os.close(self.read_fd)
