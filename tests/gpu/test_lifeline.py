"""No workload outlives its node: a daemon killed with -9 takes its running tasks with it.

A real child process plays the daemon (it runs a quiet workload in the real sandbox and is
then killed with SIGKILL); the workload must be gone within a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio

from gpu.runtime import with_lifeline
from tests.gpu.conftest import needs_bwrap
from tests.gpu.test_freezer import states_of
from tests.gpu.test_sandbox import _tagged

ROOT = Path(__file__).resolve().parents[2]
DAEMON = """
import sys, trio
from pathlib import Path
from consensus.market.messages import Workload
from gpu.exec_runtime import ExecRuntime
from gpu.freezer import Freezer
from gpu.runtime import RunSpec
from tests.gpu.conftest import sandbox

QUIET = "import time\\nprint('started', flush=True)\\ntime.sleep(600)"  # then never a word


async def main(mode, workdir, tag, freeze):
    freezer = Freezer()

    def on_log(line):
        if freeze == "frozen":  # paused for want of vouchers when the daemon dies
            freezer.freeze()
        print(line, flush=True)

    async def on_segment(done):
        raise AssertionError("never finishes")

    workload = Workload(kind="exec", command=["python3", "-c", QUIET], params={"tag": tag})
    spec = RunSpec("t", workload, Path(workdir), freezer=freezer)
    await ExecRuntime(sandbox(mode)).run(spec, on_segment, on_log)

trio.run(main, *sys.argv[1:])
"""


@pytest.mark.parametrize("freeze", ["running", "frozen"])
@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "limits"])
async def test_a_workload_dies_with_the_daemon_that_started_it(
    workdir: Path, mode: str, freeze: str
) -> None:
    """Frozen too: the lifeline is never frozen, and SIGKILL ends a stopped process."""
    tag = os.urandom(8).hex()
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, mode, str(workdir), tag, freeze],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        with trio.fail_after(30):
            line = await trio.to_thread.run_sync(daemon.stdout.readline)
        assert line.strip() == "started" and _tagged(tag), "the workload runs"
        if freeze == "frozen":
            with trio.fail_after(10):
                await states_of(tag, {psutil.STATUS_STOPPED})
        daemon.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            while _tagged(tag):  # polled: the kernel gives no event for a stranger's exit
                await trio.sleep(0.1)
    finally:
        daemon.kill()
        daemon.wait()


def test_a_uid_drop_moves_into_the_lifeline_and_the_pipe_is_passed() -> None:
    argv, popen = with_lifeline(
        ["run", "it"], 7, {"user": 65534, "group": 65534, "extra_groups": [], "pass_fds": (3,)}
    )
    assert argv[argv.index("--user") :] == [
        "--user", "65534", "--group", "65534", "--pass-fds", "3", "--", "run", "it",
    ]  # fmt: skip
    assert popen == {"pass_fds": (3, 7)}
