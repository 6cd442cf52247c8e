"""Detached processes for the localnet: start them, wait for them, stop them all.

Each process runs in its own session (so it outlives the ``localnet start`` command, and a
Ctrl-C in that shell does not reach it) with its output in a log file. Waiting polls what the
process offers (a port, a file) within a deadline: these processes are not our children once
``start`` exits, so there is nothing to block on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from node.localnet.state import Proc

T = TypeVar("T")
POLL_S = 0.1
STOP_TIMEOUT_S = 15.0


class StartFailed(RuntimeError):
    """A process exited or did not become ready; the message carries its log's last lines."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the process that takes it binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> Proc:
    """Starts ``cmd`` detached (own session, stdin closed), appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env | {"PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    return Proc.of(child.pid)


def wait_until(
    probe: Callable[[], T | None], proc: Proc, log: Path, timeout_s: float, what: str
) -> T:
    """Polls ``probe`` until it returns a value; fails early if ``proc`` dies.

    Raises:
        StartFailed: ``proc`` exited, or ``timeout_s`` passed; names ``what`` and shows the log.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if not proc.alive():
            raise StartFailed(f"{what} exited during start-up; its log {log} ends:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise StartFailed(f"{what} not ready within {timeout_s:g} s; {log} ends:\n{tail(log)}")
        time.sleep(POLL_S)


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def stop_all(procs: list[tuple[str, Proc]], timeout_s: float = STOP_TIMEOUT_S) -> dict[str, str]:
    """SIGTERM each live process, wait, then SIGKILL the stragglers and their process groups.

    Returns each process's name mapped to how it ended: "stopped", "killed" or "not running".
    """
    outcome = {name: "not running" for name, _ in procs}
    live = {name: p for name, p in procs if p.alive()}
    for name, proc in live.items():
        _signal(proc, signal.SIGTERM)
        outcome[name] = "stopped"
    stragglers = _wait_gone(list(live.values()), timeout_s)
    for name, proc in live.items():
        if proc in stragglers:
            outcome[name] = "killed"
        # The group takes down what the process started (a worker's workloads) with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    _wait_gone(stragglers, 5.0)
    return outcome


def _signal(proc: Proc, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)


def _wait_gone(procs: list[Proc], timeout_s: float) -> list[Proc]:
    """Waits until each process has exited; returns those still alive at the deadline.

    A dead process counts as gone once it is a zombie: these are not our children, and the
    init process that inherited them reaps them in its own time (seconds, in some containers).
    """
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if p.alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [p for p in alive if p.alive()]
    return alive
