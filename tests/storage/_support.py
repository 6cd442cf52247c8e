"""Helpers shared by the storage tests: thread accounting and talking to child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import trio

REPO_ROOT = Path(__file__).resolve().parents[2]


def non_trio_threads() -> set[threading.Thread]:
    """Live threads, minus trio's idle worker cache.

    trio keeps finished ``to_thread`` workers (used e.g. to reap child processes) alive for
    up to 10 s, and they may exit mid-test, so counting them would make leak checks flaky.
    """
    return {t for t in threading.enumerate() if not t.name.startswith("Trio thread")}


async def start_child(code: str, *args: str) -> trio.Process:
    """Start ``python -c code args...`` with the repo importable and stdin/stdout piped.

    stderr is inherited so a crashing child's traceback shows up in pytest's output.
    """
    inherited = os.environ.get("PYTHONPATH")
    pythonpath = os.pathsep.join([str(REPO_ROOT), *([inherited] if inherited else [])])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return await trio.lowlevel.open_process(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )


class LineReader:
    """Reads whole lines from a child's stdout; a line without its newline is never returned.

    The child prints a line only after the thing it reports is durable, so an incomplete
    last line (impossible with one small write, but cheap to rule out) is not a claim.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def readline(self) -> str | None:
        """Return the next line without its newline, or None at end of file."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    async def read_all(self) -> list[str]:
        """Return every remaining line up to end of file."""
        lines = []
        while (line := await self.readline()) is not None:
            lines.append(line)
        return lines
