"""``make demo`` end to end: the README's main command, as a newcomer runs it.

A real localnet (five daemons and a chain), a real training job and a render job (or the batch
job without Blender), real sentry challenges and real claims on chain. About two minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def test_make_demo_runs_the_whole_flow_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}
    done = subprocess.run(
        [sys.executable, "-m", "node.demo"],
        cwd=tmp_path,  # the demo keeps its data dirs in ./.demo
        env=env | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for step in (
        "bid   task 0",  # bids arrived
        "award task 0 ->",  # the cheapest won
        "checkpoint(s) hashed and chained",
        "task 0: attested",
        "re-ran its sampled segments: PASS",  # the sentry's verdict
        "anchored on chain",
        "worker(s) in batches",  # the sentry's batched payout
        "received ",  # the worker holds its earnings on chain
        "verification: train:",  # the summary states the guarantee
        "demo done",
    ):
        assert step in out, f"missing step {step!r} in:\n{out[-4000:]}"
    assert (tmp_path / ".demo" / "results" / "train" / "model.ckpt").is_file()
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "the demo left processes running"
