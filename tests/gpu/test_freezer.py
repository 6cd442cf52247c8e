"""A task's processes paused and resumed in place, in the real sandboxes (gpu/freezer.py).

What a worker does when vouchers stop: every process of the workload stopped, the lifeline
that guards them left awake; thawed, the workload goes on where it was; cancelled while
paused, it still hears SIGTERM (a stopped process would only be killed, its handler unrun).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
import trio

from consensus.market.messages import Workload
from gpu.exec_runtime import ExecRuntime
from gpu.freezer import Freezer, descendants
from gpu.runtime import RunResult, RunSpec, SegmentDone
from tests.gpu.conftest import needs_bwrap, sandbox
from tests.gpu.test_sandbox import _tagged

TICKING = """
import pathlib, signal, sys, time
def ended(*_):
    pathlib.Path("terminated").write_text("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, ended)
for i in range(100000):
    print("tick", i, flush=True)
    time.sleep(0.02)
"""


async def gone(tag: str) -> None:
    """Waits (within the caller's deadline) until no process of the workload is left: a
    process signalled by group, not our child, dies soon after, not at once (CI once saw it
    still there on a loaded machine)."""
    while _tagged(tag):
        await trio.sleep(0.01)


async def states_of(tag: str, want: set[str]) -> None:
    """Waits (within the caller's deadline) until every process of the workload (not the
    lifeline that started it) is in one of ``want``: a signal arrives soon after it is sent,
    not at once."""
    while True:
        states = set()
        for pid in _tagged(tag):
            try:
                proc = psutil.Process(int(pid))
                if "lifeline.py" not in " ".join(proc.cmdline()):
                    states.add(proc.status())
            except psutil.Error:
                continue
        if states and states <= want:
            return
        await trio.sleep(0.01)


@needs_bwrap
@pytest.mark.parametrize("mode", ["bwrap", "limits"])
async def test_a_frozen_workload_stops_in_place_and_goes_on_when_thawed(
    workdir: Path, mode: str
) -> None:
    tag = os.urandom(8).hex()
    workload = Workload(kind="exec", command=["python3", "-c", TICKING], params={"tag": tag})
    freezer, lines = Freezer(), []
    ticked = trio.Event()

    def on_log(line: str) -> None:
        nonlocal ticked
        lines.append(line)
        ticked.set()

    async def on_segment(done: SegmentDone) -> None:
        raise AssertionError("a cancelled run reports no segment")

    results: list[RunResult] = []

    async def run() -> None:
        spec = RunSpec("t", workload, workdir, freezer=freezer)
        results.append(await ExecRuntime(sandbox(mode)).run(spec, on_segment, on_log))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await ticked.wait()
            freezer.freeze()
            await states_of(tag, {psutil.STATUS_STOPPED})
            ticked = trio.Event()
            freezer.thaw()
            await states_of(tag, {psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING})
            await ticked.wait()  # it goes on
            freezer.freeze()
            await states_of(tag, {psutil.STATUS_STOPPED})
            nursery.cancel_scope.cancel()  # the worker stops a paused task
    assert (workdir / "terminated").read_text() == "yes", "its SIGTERM handler ran"
    assert not _tagged(tag)
    assert lines[0] == "tick 0" and not results


async def test_a_sweep_stops_what_a_frozen_task_started_later() -> None:
    """A freeze that comes before the lifeline has started the workload (or before the
    workload forks) finds nothing to stop; the worker's sweeps while paused catch it."""
    freezer = Freezer()
    later = "import subprocess, time; time.sleep(0.3); subprocess.run(['sleep', '30'])"
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process([sys.executable, "-c", later])
        try:
            with freezer.watching(process.pid):
                freezer.freeze()  # nothing below it yet
                while not psutil.Process(process.pid).children():
                    await trio.sleep(0.01)
                (child,) = psutil.Process(process.pid).children()
                assert child.status() != psutil.STATUS_STOPPED
                while child.status() != psutil.STATUS_STOPPED:
                    freezer.sweep()  # as the worker's tick loop does every SWEEP_MS
                    await trio.sleep(0.01)
                assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED, (
                    "the watched process itself (the lifeline) stays awake"
                )
                freezer.thaw()
                while child.status() == psutil.STATUS_STOPPED:
                    await trio.sleep(0.01)
        finally:
            family = psutil.Process(process.pid).children(recursive=True)
            process.kill()
            for proc in family:
                proc.kill()
            await process.wait()


async def test_a_background_process_whose_parent_exited_is_frozen_too(workdir: Path) -> None:
    """In the ``limits`` sandbox (no pid namespace) a workload's background process outlives
    its parent and leaves the lifeline's tree for init's; it stays in the lifeline's process
    group, and a freeze must stop it there."""
    tag = os.urandom(8).hex()
    command = ["sh", "-c", f"python3 -c '{TICKING.strip()}' &"]
    workload = Workload(kind="exec", command=command, params={"tag": tag})
    freezer = Freezer()
    ticked = trio.Event()

    async def on_segment(done: SegmentDone) -> None:
        raise AssertionError("a cancelled run reports no segment")

    async def run() -> None:
        spec = RunSpec("t", workload, workdir, freezer=freezer)
        await ExecRuntime(sandbox("limits")).run(spec, on_segment, lambda _line: ticked.set())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await ticked.wait()
            (lifeline,) = freezer.watched
            tree = {lifeline} | {c.pid for c in descendants(lifeline)}
            orphans = [pid for pid in map(int, _tagged(tag)) if pid not in tree]
            assert orphans, "the background process left the lifeline's tree"
            freezer.freeze()
            await states_of(tag, {psutil.STATUS_STOPPED})
            nursery.cancel_scope.cancel()
        await gone(tag)  # the orphan is init's child, not ours: its SIGKILL is not awaited
