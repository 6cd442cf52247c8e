"""Runs a workload until it ends or until the daemon that started it dies, whichever is first.

Usage (by :func:`gpu.runtime.run_logged`, never by hand)::

    python gpu/lifeline.py FD [--user UID --group GID] [--pass-fds A,B] -- COMMAND...

``FD`` is the read end of a pipe whose only write end the daemon holds. A daemon killed with
-9 closes it, the read returns end-of-file, and the lifeline kills the command and everything
it started, so no workload outlives its node and holds a GPU that a restarted node would hand
out again. (``PR_SET_PDEATHSIG`` cannot do this: it fires when the forking *thread* exits, and
trio forks from worker threads that retire when idle.) The command runs in the lifeline's own
process group, under ``--user``/``--group`` when given (a root daemon's limits-only jail),
with the descriptors in ``--pass-fds`` (a runtime's control pipe) and no others.

The exit status is the command's, a death by signal N as 128 + N (as a shell reports it).
Run as a script, so it imports nothing of ours; psutil comes from the daemon's environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psutil


def _kill_tree(root: subprocess.Popen[bytes]) -> None:
    try:
        family = psutil.Process(root.pid).children(recursive=True)
    except psutil.Error:
        family = []
    for proc in reversed(family):  # the deepest first, while each still has a parent to find
        try:
            proc.kill()
        except psutil.Error:
            continue  # gone already
    root.kill()


def _watch(fd: int, child: subprocess.Popen[bytes], dying: threading.Event) -> None:
    while os.read(fd, 64):
        continue
    dying.set()  # from here the main thread waits for this one, which ends the process
    _kill_tree(child)
    os._exit(128 + signal.SIGKILL)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    fd, options, command = int(argv[1]), argv[2:split], argv[split + 1 :]
    popen: dict[str, Any] = {}
    if "--user" in options:
        popen = {
            "user": int(options[options.index("--user") + 1]),
            "group": int(options[options.index("--group") + 1]),
            "extra_groups": [],
        }
    if "--pass-fds" in options:
        popen["pass_fds"] = [int(x) for x in options[options.index("--pass-fds") + 1].split(",")]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, **popen)
    dying = threading.Event()
    threading.Thread(target=_watch, args=(fd, child, dying), daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a stop from the daemon reaches the command
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    if dying.is_set():  # the command died of the kill: exiting now would cut the rest short
        threading.Event().wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
