"""The interface between the market and the runtimes that run its tasks.

The worker service hands an :class:`Executor` a :class:`RunSpec` (the workload, a directory
holding the unpacked inputs, and optionally a checkpoint to resume from) and gets back, as they
happen, finished segments (:class:`SegmentDone`, each with its checkpoint file) and log lines,
then a :class:`RunResult`. Cancelling the call stops the work.

Every segment's state hash is chained: ``chained_i = BLAKE3(chained_{i-1} || hash_i)`` from
:data:`GENESIS`, so one value commits to the whole history of a task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import trio
from blake3 import blake3

from consensus.market.messages import Workload
from gpu.freezer import Freezer, descendants

LOG_LINE_CHARS = 1000
GENESIS = bytes(32)
KILL_GRACE_S = 5.0  # a cancelled workload gets SIGTERM, then SIGKILL after this long
LIFELINE = Path(__file__).with_name("lifeline.py")


@dataclass(frozen=True)
class RunSpec:
    task: str  # a label for logs
    workload: Workload
    workdir: Path  # inputs unpacked here; the workload writes its outputs here too
    resume: Path | None = None  # a checkpoint file to start from
    resume_index: int = -1  # the segment that checkpoint closed
    resume_chained: bytes = GENESIS  # the chained hash up to and including that segment
    gpus: int = 1  # how many of the worker's GPUs the task was given
    freezer: Freezer | None = None  # the worker pauses the task's processes through it


@dataclass(frozen=True)
class SegmentDone:
    index: int
    hash: bytes  # BLAKE3 of the canonical state after the segment
    chained: bytes  # BLAKE3(previous chained || hash): commits to the whole history
    seconds: int  # work seconds of this run so far
    checkpoint: Path  # the state, to keep for challenges and failover
    points: tuple[bytes, ...] = ()  # state hashes at the segment's inner points, if it has any


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


class UnsafeOutput(Exception):
    """A workload left a link or a special file where the node reads its results."""


def regular_file(root: Path, rel: str) -> Path:
    """``root / rel`` if it and every folder on the way are real, not links (which the node,
    reading as itself, would follow out of the jail).

    Raises:
        UnsafeOutput: a component is a symbolic link, or the file is not a regular file.
    """
    path = root
    for part in Path(rel).parts:
        path = path / part
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafeOutput(f"{rel}: {path.relative_to(root)} is a symbolic link")
    if not stat.S_ISREG(mode):
        raise UnsafeOutput(f"{rel}: not a regular file")
    return path


def tree_hash(root: Path, names: list[str]) -> bytes:
    """BLAKE3 over the sorted (name, content hash) of the files under ``names``.

    Raises:
        UnsafeOutput: a link or a special file among them.
    """
    hasher = blake3()
    files: list[Path] = []
    for name in names:
        path = root / name
        if path.is_symlink():
            raise UnsafeOutput(f"{name}: a symbolic link")
        files += [path] if path.is_file() else sorted(path.rglob("*"))
    for path in sorted(files):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        regular_file(root, rel)
        hasher.update(rel.encode() + b"\0")
        hasher.update(blake3(path.read_bytes()).digest())
    return hasher.digest()


async def run_logged(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    on_log: OnLog,
    *,
    freezer: Freezer | None = None,
    **popen: Any,
) -> int:
    """Runs ``command`` in its own session, feeding each output line to ``on_log``.

    Cancelled, it stops the process and everything it started: SIGTERM, then SIGKILL after
    :data:`KILL_GRACE_S`. If this process dies instead (kill -9), the command's lifeline
    (:mod:`gpu.lifeline`) kills it. ``popen`` passes extra ``subprocess.Popen`` options
    (``pass_fds``, ``user``...). With a ``freezer``, the command can be paused and resumed.
    """
    read_end, write_end = os.pipe()  # the write end never leaves this process
    try:
        argv, options = with_lifeline(command, read_end, popen)
        process = await trio.lowlevel.open_process(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **options,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    try:
        with (freezer or Freezer()).watching(process.pid):
            return await _read_lines(process, on_log)
    finally:
        with trio.CancelScope(shield=True):
            await _stop_group(process)
        os.close(write_end)


async def _read_lines(process: trio.Process, on_log: OnLog) -> int:
    assert process.stdout is not None
    buffer = b""
    async for data in process.stdout:
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            on_log(line.decode(errors="replace")[:LOG_LINE_CHARS])
    if buffer:
        on_log(buffer.decode(errors="replace")[:LOG_LINE_CHARS])
    return await process.wait()


def with_lifeline(
    command: list[str], fd: int, popen: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """``command`` under :mod:`gpu.lifeline` watching ``fd``; a uid drop moves into it."""
    drop = ["--user", str(popen["user"]), "--group", str(popen["group"])] if "user" in popen else []
    rest = {k: v for k, v in popen.items() if k not in ("user", "group", "extra_groups")}
    passed = tuple(rest.get("pass_fds", ()))  # the command's own (a runtime's control pipe)
    rest["pass_fds"] = (*passed, fd)
    if passed:
        drop += ["--pass-fds", ",".join(map(str, passed))]
    return [sys.executable, "-P", str(LIFELINE), str(fd), *drop, "--", *command], rest


async def _stop_group(process: trio.Process) -> None:
    """Ends the process and all it started: SIGTERM, then SIGKILL after the grace period.

    Descendants are signalled one by one as well as by process group, since a jail's processes
    run in their own session; they are listed before the leader goes (its orphans could no
    longer be found).
    """
    family = descendants(process.pid) if process.returncode is None else []
    if process.returncode is None:
        _signal_all(process, family, signal.SIGTERM)
        _signal_all(process, family, signal.SIGCONT)  # a paused task must wake to hear it
        with trio.move_on_after(KILL_GRACE_S):
            await process.wait()
    _signal_all(process, family, signal.SIGKILL)
    await process.wait()
    if family:  # not our children, so no wait(): psutil watches them go (a killed jail's
        # processes may still be on their way out when bwrap has gone)
        await trio.to_thread.run_sync(psutil.wait_procs, family, KILL_GRACE_S)


def _signal_all(process: trio.Process, family: list[psutil.Process], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # the group is gone
    except PermissionError:
        if process.returncode is None:
            process.send_signal(sig)
    for member in family:
        with contextlib.suppress(psutil.Error):  # gone already; psutil refuses a reused pid
            member.send_signal(sig)
