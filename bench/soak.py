"""Soak: a localnet under a steady stream of small jobs for a while; does anything give way?

Starts a localnet on this machine (one requester, N workers, one sentry, one chain, settlement
on), then keeps at most ``--concurrency`` small exec jobs in flight through the requester's API
for ``--duration-s`` seconds, each a short Python script of about ``--job-s`` seconds. After the
duration it stops submitting and lets the jobs in flight finish (``--drain-s``); any still
running then are cancelled and counted as unfinished, not as failed.

It reports the jobs completed, the failures grouped by the job's final state and reason, p50
and p99 job latency (submit to final state, as the client sees it), the resident memory
(VmRSS) of every localnet process right after the net is ready, halfway and at the end (growth
in the second half, past the warm-up, is what a leak shows as), and what each
worker has vouched and earned on chain so far. Baseline, measured in the same run: the same
script run directly as a local subprocess (no network, no sandbox); the latency is printed as
a ratio to it (``overhead_x``).

Exits 1 when a job failed (every job should verify on a healthy localnet) or the localnet did
not start, 2 for bad arguments; every daemon is stopped on the way out, Ctrl-C included.

Usage: python bench/soak.py [--duration-s 120] [--workers 2] [--concurrency W] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from node.client import ApiClient
from node.home import Home, HomeError
from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import State

FINAL = ("verified", "failed", "cancelled")
POLL_S = 0.25
BASELINE_RUNS = 3
JOB_SPEC = """
name = "soak"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = {estimate_s}

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "1000 gwei"
deadline = "5m"
"""
# Mostly sleep, a little hashing and a few log lines: a job of a known length that exercises
# the log, result and voucher paths without taking the CPU the daemons share with it.
WORK = """
import hashlib, pathlib, time
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
digest, end = b"", time.monotonic() + {job_s}
while time.monotonic() < end:
    for _ in range(1000):
        digest = hashlib.sha256(digest).digest()
    print("tick", digest.hex()[:8], flush=True)
    time.sleep(0.25)
(out / "digest.txt").write_text(digest.hex() + "\\n")
"""


@dataclass
class Tally:
    """What became of the jobs submitted."""

    latencies_s: list[float] = field(default_factory=list)  # the verified jobs
    failures: Counter[str] = field(default_factory=Counter)  # "state: reason" -> count
    unfinished: int = 0  # still in flight when the drain ended; cancelled by the soak
    half_rss: dict[str, float | None] = field(default_factory=dict)  # halfway through


def write_job(job_dir: Path, job_s: float) -> dict[str, str]:
    """Writes the job's script; returns the body of POST /v1/jobs."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "work.py").write_text(WORK.format(job_s=job_s))
    spec = JOB_SPEC.format(estimate_s=int(job_s) + 2)
    return {"spec": spec, "base_dir": str(job_dir)}


def local_run_s(job_dir: Path) -> float:
    """Median seconds of the job's script run here as a plain subprocess (the baseline)."""
    samples = []
    for i in range(BASELINE_RUNS):
        run_dir = job_dir.parent / f"local-{i}"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "work.py").write_bytes((job_dir / "work.py").read_bytes())
        t0 = time.monotonic()
        subprocess.run(["python3", "work.py"], cwd=run_dir, check=True, capture_output=True)
        samples.append(time.monotonic() - t0)
    return statistics.median(samples)


def rss_mb(pid: int) -> float | None:
    """The process's resident memory (VmRSS) in MiB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # reported in kB
    return None


def rss_all(state: State) -> dict[str, float | None]:
    return {name: rss_mb(proc.pid) if proc.alive() else None for name, proc in state.procs()}


def stream(state: State, api: ApiClient, body: dict[str, str], args: argparse.Namespace) -> Tally:
    """Keeps ``args.concurrency`` jobs in flight for the duration, then drains them; takes
    every process's memory halfway through."""
    tally, in_flight = Tally(), dict[str, float]()  # job id -> when it was submitted
    t0 = time.monotonic()
    stop_at, drain_until = t0 + args.duration_s, t0 + args.duration_s + args.drain_s
    while time.monotonic() < stop_at or (in_flight and time.monotonic() < drain_until):
        if not tally.half_rss and time.monotonic() >= t0 + args.duration_s / 2:
            tally.half_rss = rss_all(state)
        while time.monotonic() < stop_at and len(in_flight) < args.concurrency:
            submitted = time.monotonic()
            in_flight[api.post("/v1/jobs", body)["job_id"]] = submitted
        for job_id, submitted in list(in_flight.items()):
            view = api.get(f"/v1/job?id={job_id}")
            if view["state"] in FINAL:
                del in_flight[job_id]
                record(tally, view, time.monotonic() - submitted)
        time.sleep(POLL_S)
    for job_id in in_flight:
        api.post(f"/v1/job/cancel?id={job_id}")
        tally.unfinished += 1
    return tally


def record(tally: Tally, view: dict[str, object], latency_s: float) -> None:
    if view["state"] == "verified":
        tally.latencies_s.append(latency_s)
    else:
        tally.failures[f"{view['state']}: {str(view['reason'])[:120]}"] += 1


def settlement(state: State) -> list[str]:
    """Each worker's vouched and claimed wei so far (claims trail by an epoch or two)."""
    lines = []
    for node in (n for n in state.nodes if n.role == "worker"):
        try:
            view = ApiClient(Home(Path(node.home)), timeout_s=5.0).get("/v1/chain")
            vouched = view.get("payee", {}).get("vouched_wei", "?")
            lines.append(f"  {node.name}: vouched {vouched} wei, earned {view['earned_wei']} wei")
        except (HomeError, KeyError) as exc:
            lines.append(f"  {node.name}: no settlement view ({exc})")
    return lines


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(
    tally: Tally, before: dict[str, float | None], after: dict[str, float | None], local_s: float
) -> tuple[float, float]:
    """Prints the figures; returns the largest RSS growth of any process in MiB, over the
    whole soak and over its second half (past the warm-up: caches filling, lazy imports)."""
    done, failed = len(tally.latencies_s), sum(tally.failures.values())
    print(f"jobs: {done} verified, {failed} failed, {tally.unfinished} unfinished at the end")
    for reason, count in tally.failures.most_common():
        print(f"  {count} x {reason}")
    p50, p99 = percentile(tally.latencies_s, 0.5), percentile(tally.latencies_s, 0.99)
    print(f"latency submit -> verified: p50 {p50:.2f} s, p99 {p99:.2f} s")
    print(f"baseline: the script as a local subprocess {local_s:.2f} s (p50 {p50 / local_s:.1f}x)")
    print("memory (VmRSS MiB, net ready -> halfway -> end):")
    growth, late = 0.0, 0.0
    for name, start in before.items():
        half, end = tally.half_rss.get(name), after.get(name)
        if start is None or half is None or end is None:
            print(f"  {name}: {start} -> {half} -> {end} (process gone)")
            continue
        growth, late = max(growth, end - start), max(late, end - half)
        print(f"  {name}: {start:.1f} -> {half:.1f} -> {end:.1f} ({end - start:+.1f}, "
              f"second half {end - half:+.1f})")  # fmt: skip
    return growth, late


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turns SIGTERM into SystemExit, so the ``finally`` that stops the daemons runs."""

    def leave(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def soak(root: Path, args: argparse.Namespace) -> int:
    body = write_job(root / "job", args.job_s)
    local_s = local_run_s(root / "job")
    try:
        net.check_free(root / "ln")
        state = net.start(root / "ln", 1, args.workers, 1, chain_mode="auto")
    except net.LocalnetError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    try:
        tally, (growth, late) = measure(state, body, args, local_s)
    except HomeError as exc:  # the requester's API stopped answering: that is a finding too
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(state.procs())
    failed = sum(tally.failures.values())
    p50 = percentile(tally.latencies_s, 0.5)
    print(f"RESULT jobs={len(tally.latencies_s)} failed={failed} p50_s={p50:.2f} "
          f"p99_s={percentile(tally.latencies_s, 0.99):.2f} max_rss_growth_mb={growth:.1f} "
          f"overhead_x={p50 / local_s:.2f} late_rss_growth_mb={late:.1f}")  # fmt: skip
    return 1 if failed else 0


def measure(
    state: State, body: dict[str, str], args: argparse.Namespace, local_s: float
) -> tuple[Tally, tuple[float, float]]:
    """Streams the jobs on a ready localnet and prints the figures; returns the tally and the
    largest RSS growths (whole soak, second half)."""
    before = rss_all(state)
    print(f"localnet ready in {state.dir}; soaking for {args.duration_s:g} s", flush=True)
    api = ApiClient(Home(Path(state.node("requester-1").home)), timeout_s=10.0)
    tally = stream(state, api, body, args)
    growth = report(tally, before, rss_all(state), local_s)
    print("settlement so far:", *settlement(state), sep="\n")
    return tally, growth


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-s", type=float, default=120.0, help="submit jobs this long")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, help="jobs in flight (default: --workers)")
    parser.add_argument("--job-s", type=float, default=2.0, help="each job's script runs this long")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for the last jobs")
    parser.add_argument("--dir", type=Path, help="localnet and job dirs (default: a temp dir)")
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or args.workers
    for key in ("duration_s", "workers", "concurrency", "job_s"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key)}")
    if args.drain_s < 0:
        parser.error(f"--drain-s must not be negative, got {args.drain_s}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        with stop_on_sigterm():
            if args.dir is not None:
                return soak(args.dir.resolve(), args)
            with tempfile.TemporaryDirectory(prefix="idlegrid-soak-") as tmp:
                return soak(Path(tmp), args)
    except KeyboardInterrupt:
        print("soak: interrupted; every daemon stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
