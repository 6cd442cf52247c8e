"""``bench/soak.py`` on a small localnet for a short while: jobs complete, none fails, the RESULT
line is well formed, and no daemon is left running. About 35 s (a localnet start, 15 s of jobs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1].parent
RESULT = re.compile(
    r"^RESULT jobs=(\d+) failed=(\d+) p50_s=([\d.]+) p99_s=([\d.]+) "
    r"max_rss_growth_mb=(-?[\d.]+) overhead_x=([\d.]+) late_rss_growth_mb=(-?[\d.]+)$"
)


def test_soak_runs_jobs_without_failures_and_stops_every_daemon(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}
    args = ["--duration-s", "15", "--workers", "1", "--job-s", "1", "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), *args],
        cwd=REPO,
        env=env | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,  # two shared cores: a localnet start can take a minute under load
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    match = RESULT.match(last)
    assert match, f"last line is not a RESULT line: {last!r}"
    jobs, failed, p50, p99 = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    assert jobs > 0
    assert failed == 0
    assert 0 < p50 <= p99
    assert float(match[6]) >= 1.0, "a job through the network is no faster than run locally"
    for name in ("requester-1", "worker-1", "sentry-1", "chain"):
        memory = done.stdout[done.stdout.find("memory") :]
        assert re.search(rf"^  {name}: [\d.]+ -> [\d.]+ -> [\d.]+ ", memory, re.M), memory
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "the soak left processes running"
