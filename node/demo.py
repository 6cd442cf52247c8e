"""``make demo``: what a newcomer runs first.

For now it shows one node's life: initialise a data dir in ``./.demo``, start the daemon as a
separate process, query it through the CLI as an operator would, and stop it with SIGTERM. The
local network issue grows this into a full requester / worker / sentry run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(".demo").resolve()
START_TIMEOUT_S = 30.0


def idlegrid(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node", *args, "--home", str(HOME)]
    print("$ idlegrid " + " ".join(args), flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True, check=False)
    print((result.stdout + result.stderr).rstrip(), flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `idlegrid {' '.join(args)}` exited {result.returncode}")
    return result


def main() -> None:
    idlegrid("init", "--role", "requester", "--role", "worker", "--role", "sentry")
    os.environ.setdefault("IDLEGRID_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0")  # a demo stays local
    print("$ idlegrid node start  (in the background)", flush=True)
    log = open(HOME / "demo-daemon.out", "w")  # noqa: SIM115 - lives as long as the daemon
    daemon = subprocess.Popen(
        [sys.executable, "-m", "node", "node", "start", "--home", str(HOME)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until_up(daemon)
        idlegrid("status")
        idlegrid("wallet", "address")
        idlegrid("config", "show")
    finally:
        started = time.monotonic()
        daemon.terminate()
        code = daemon.wait(timeout=10)
        log.close()
        print(f"daemon stopped on SIGTERM in {time.monotonic() - started:.2f} s (exit {code})")
    print(f"\ndemo done; the node's data dir is {HOME} (logs in {HOME / 'logs'})")


def wait_until_up(daemon: subprocess.Popen[bytes]) -> None:
    """Polls the CLI, as an operator's script would, until the daemon answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(
                f"demo: the daemon exited {daemon.returncode}; see {HOME}/demo-daemon.out"
            )
        probe = subprocess.run(
            [sys.executable, "-m", "node", "status", "--home", str(HOME)],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: the daemon did not answer within {START_TIMEOUT_S:g} s")


if __name__ == "__main__":
    main()
