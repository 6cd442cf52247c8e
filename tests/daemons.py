"""Real daemons in child processes, as an operator runs them, for integration tests.

Synchronisation is on what the daemon prints (its "node started" log line) and on process exit,
never on sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0


LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment for the CLI: nothing inherited, p2p on loopback only.

    Workers jail with bubblewrap where it is installed and fall back to resource limits where
    not (``auto``), as a localnet does: the README makes bubblewrap optional, so the daemon
    tests must pass without it; the jail itself is tested in ``tests/gpu/``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}
    base = {"PYTHONUNBUFFERED": "1", "IDLEGRID_P2P_LISTEN": LOOPBACK}
    return env | base | {"IDLEGRID_WORKER_SANDBOX": "auto"} | extra


def peer_id(home: Path) -> str:
    """The peer id of the node whose data dir is ``home``."""
    return str(json.loads((home / "identity.json").read_text())["peer_id"])


def idlegrid(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs one CLI command to completion (stdin closed, as in CI)."""
    return subprocess.run(
        [sys.executable, "-m", "node", *args, "--home", str(home)],
        cwd=REPO,
        env=env or cli_env(),
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@dataclass
class Daemon:
    """``idlegrid node start`` in a child process, its output collected line by line."""

    home: Path
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=cli_env)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "node", "start", "--home", str(self.home), *self.args],
            cwd=REPO,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT_S) -> str:
        """Returns the first output line containing ``text``; fails on exit, or when
        ``timeout`` seconds pass in all (not per line: a chatty daemon would never time out)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.output()}") from None
            if line is None:
                raise AssertionError(f"daemon exited before {text!r}: {self.output()}")
            self.lines.append(line)
            if text in line:
                return line

    def wait_count(self, text: str, count: int, timeout: float = START_TIMEOUT_S) -> None:
        """Waits until ``count`` output lines, seen so far or to come, contain ``text``.

        Counts lines an earlier ``wait_for`` already consumed: a peer discovered before the
        daemon logged "node started" still counts.
        """
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.lines) < count:
            self.wait_for(text, timeout=max(0.0, deadline - time.monotonic()))

    def wait_started(self) -> Daemon:
        self.wait_for("node started")
        return self

    def output(self) -> str:
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def all_output(daemons: dict[str, Daemon], tail: int = 6000) -> str:
    """The end of each daemon's output, named: for a failure that one daemon cannot explain."""
    return "\n".join(f"--- {name}:\n{d.output()[-tail:]}" for name, d in daemons.items())
