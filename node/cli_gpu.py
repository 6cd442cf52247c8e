"""``idlegrid gpu``: what this machine offers as a worker, and how its workloads are sandboxed."""

from __future__ import annotations

import json
from typing import Any

import click

from config import load
from config.schema import WorkerSettings
from consensus.market.spec import REFERENCE_GFLOPS
from gpu import bench
from gpu.devices import discover
from gpu.sandbox import SandboxUnavailable
from node.cli_base import Failure, emit, home_option, json_option, table
from node.home import Home, resolve_home


def check_sandbox(worker: WorkerSettings, home: Home) -> str:
    """The sandbox's description, or a clean failure naming what to install or set."""
    from node.market.service import worker_sandbox  # noqa: PLC0415 - keeps the CLI quick

    try:
        return worker_sandbox(worker, home.work).describe()
    except SandboxUnavailable as exc:
        raise Failure(str(exc)) from None


@click.group("gpu", invoke_without_command=True)
@home_option
@json_option
@click.pass_context
def gpu(ctx: click.Context, home_dir: str | None, as_json: bool) -> None:
    """This machine's GPUs (NVML) or CPU-only profile, the class a worker offers, its sandbox."""
    if ctx.invoked_subcommand is not None:
        return
    from node.market.service import worker_sandbox  # noqa: PLC0415 - keeps the CLI quick

    home = Home(resolve_home(home_dir))
    worker = load(home.config).settings.worker
    payload = discover().to_json()
    try:
        payload["sandbox"] = {"ok": True, "mode": worker.sandbox,
                              "detail": worker_sandbox(worker, home.work).describe()}  # fmt: skip
    except SandboxUnavailable as exc:
        payload["sandbox"] = {"ok": False, "mode": worker.sandbox, "detail": str(exc)}
    emit(as_json, payload, _human)


def _human(p: dict[str, Any]) -> str:
    offer = p["offer"]
    vram = f", {round(offer['vram_mb'] / 1024)} GB each" if offer["vram_mb"] else ""
    lines = [f"offer     {offer['count']} x {offer['gpu_class']}{vram}"]
    if p["backend"] == "nvidia":
        lines.append(f"driver    {p['driver']} (CUDA {p['cuda'] or '?'})")
        rows = [("GPU", "CLASS", "NAME", "VRAM FREE/TOTAL", "UTIL", "TEMP", "POWER", "CC", "PCIE")]
        for g in p["gpus"]:
            free = "?" if g["vram_free_mb"] is None else str(g["vram_free_mb"])
            power = "-" if g["power_w"] is None else f"{g['power_w']}/{g['power_limit_w']} W"
            rows.append((str(g["index"]), g["gpu_class"], g["name"],
                         f"{free}/{g['vram_total_mb']} MB", _pct(g["utilisation_pct"]),
                         _unit(g["temperature_c"], " C"), power, g["compute_capability"] or "-",
                         g["pcie"] or "-"))  # fmt: skip
        lines.append(table(rows))
    else:
        lines.append(p["note"])
    lines.append(f"cpu       {p['cpu_model']}, {p['cpu_cores']} cores, {p['ram_mb']} MB RAM")
    lines += [f"also      {other}" for other in p["others"]]
    sandbox = p["sandbox"]
    state = "" if sandbox["ok"] else "UNAVAILABLE: "
    lines.append(f"sandbox   {state}{sandbox['detail']}")
    return "\n".join(lines)


def _pct(value: int | None) -> str:
    return "-" if value is None else f"{value} %"


def _unit(value: int | None, unit: str) -> str:
    return "-" if value is None else f"{value}{unit}"


@gpu.command("bench")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="the challenge: fixes the benchmark's inputs")  # fmt: skip
@click.option(
    "--size", type=click.IntRange(64, 32768), help="matrix side (default 4096 on GPU, 1024 on CPU)"
)
@home_option
@json_option
def gpu_bench(seed: int, size: int | None, home_dir: str | None, as_json: bool) -> None:
    """Measure matmul throughput, memory bandwidth and host-to-device copies; keep the score."""
    try:
        result = bench.run(seed, size or 0)
    except bench.BenchUnavailable as exc:
        raise Failure(str(exc)) from None
    payload = result.to_json()
    home = Home(resolve_home(home_dir))
    if home.is_initialised():
        path = home.root / bench.BENCH_FILE
        path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        payload["saved"] = str(path)
    emit(as_json, payload, _human_bench)


def _human_bench(p: dict[str, Any]) -> str:
    flops = ", ".join(f"{k} {v} GFLOPS" for k, v in p["matmul_gflops"].items())
    lines = [
        f"device    {p['device']} ({p['backend']}), matmul {p['size']}x{p['size']}",
        f"matmul    {flops}",
        f"memory    {p['memory_gbps']} GB/s copy"
        + ("" if p["h2d_gbps"] is None else f", host to device {p['h2d_gbps']} GB/s"),
        f"score     {p['score']} (reference worker: {REFERENCE_GFLOPS} GFLOPS fp32 = 1000)",
        f"proof     {p['proof']} (seed {p['seed']})",
    ]
    saved = f"saved     {p.get('saved')}: a worker bids with this score (a running one from "
    lines.append(saved + "its next start)" if "saved" in p
                 else "not saved: no initialised data dir (idlegrid init)")  # fmt: skip
    return "\n".join(lines)
