"""How a worker runs a task: the interface the market drives, and a plain process executor.

The market's worker service hands an :class:`Executor` a :class:`RunSpec` (the workload, a
directory holding the unpacked inputs, and optionally a checkpoint to resume from) and gets
back, as they happen, finished segments (:class:`SegmentDone`, each with its checkpoint file)
and log lines, then a :class:`RunResult`. Cancelling the call stops the work.

:class:`ProcessExecutor` runs ``exec`` workloads as one segment: the command in the task's
directory with a clean environment, its output tree hashed as the checkpoint. The GPU runtime
(train and render, segmented and sandboxed) implements the same interface.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from blake3 import blake3

from consensus.market.messages import Workload

LOG_LINE_CHARS = 1000


@dataclass(frozen=True)
class RunSpec:
    task: str  # a label for logs
    workload: Workload
    workdir: Path  # inputs unpacked here; the workload writes its outputs here too
    resume: Path | None = None  # a checkpoint file to start from
    resume_index: int = -1  # the segment that checkpoint closed


@dataclass(frozen=True)
class SegmentDone:
    index: int
    hash: bytes  # BLAKE3 of the canonical state after the segment
    chained: bytes  # BLAKE3(previous chained || hash): commits to the whole history
    seconds: int  # work seconds of this run so far
    checkpoint: Path  # the state, to keep for challenges and failover


@dataclass(frozen=True)
class RunResult:
    ok: bool
    error: str = ""
    result_hash: bytes = b""


OnSegment = Callable[[SegmentDone], Awaitable[None]]
OnLog = Callable[[str], None]


class Executor(Protocol):
    kinds: frozenset[str]

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult: ...


def chain(previous: bytes, state_hash: bytes) -> bytes:
    return blake3(previous + state_hash).digest()


GENESIS = bytes(32)


def tree_hash(root: Path, names: list[str]) -> bytes:
    """BLAKE3 over the sorted (name, content hash) of the files under ``names``."""
    hasher = blake3()
    files = []
    for name in names:
        path = root / name
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for path in sorted(files):
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(blake3(path.read_bytes()).digest())
    return hasher.digest()


class ProcessExecutor:
    """``exec`` workloads: one segment, the command run in the task directory."""

    kinds = frozenset({"exec"})

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}

    async def run(self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog) -> RunResult:
        workload, started = spec.workload, trio.current_time()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(spec.workdir),
            "IDLEGRID_SHARD": str(workload.shard),
            "IDLEGRID_SHARDS": str(workload.shards),
            "IDLEGRID_SEED": str(workload.seed),
            **{f"IDLEGRID_PARAM_{k.upper()}": v for k, v in workload.params.items()},
            **self.extra_env,
        }
        try:
            code = await run_logged(workload.command, spec.workdir, env, on_log)
        except OSError as exc:  # e.g. no such program
            return RunResult(False, f"cannot start {workload.command[0]!r}: {exc.strerror}")
        if code != 0:
            return RunResult(False, f"exit code {code}")
        state = await trio.to_thread.run_sync(tree_hash, spec.workdir, workload.outputs)
        checkpoint = spec.workdir / ".idlegrid-checkpoint"
        checkpoint.write_bytes(state)
        seconds = int(trio.current_time() - started)
        await on_segment(SegmentDone(0, state, chain(GENESIS, state), seconds, checkpoint))
        return RunResult(True, result_hash=state)


async def run_logged(command: list[str], cwd: Path, env: dict[str, str], on_log: OnLog) -> int:
    """Runs ``command``, feeding each output line to ``on_log``; killed if cancelled."""
    process = await trio.lowlevel.open_process(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        buffer = b""
        async for data in process.stdout:
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                on_log(line.decode(errors="replace")[:LOG_LINE_CHARS])
        if buffer:
            on_log(buffer.decode(errors="replace")[:LOG_LINE_CHARS])
        return await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
