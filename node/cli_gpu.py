"""``idlegrid gpu``: what this machine offers as a worker, and how its workloads are sandboxed."""

from __future__ import annotations

from typing import Any

import click

from gpu.devices import discover
from node.cli_base import emit, json_option, table


@click.group("gpu", invoke_without_command=True)
@json_option
@click.pass_context
def gpu(ctx: click.Context, as_json: bool) -> None:
    """This machine's GPUs (NVML) or CPU-only profile, and the class a worker offers."""
    if ctx.invoked_subcommand is not None:
        return
    payload = discover().to_json()
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
    return "\n".join(lines)


def _pct(value: int | None) -> str:
    return "-" if value is None else f"{value} %"


def _unit(value: int | None, unit: str) -> str:
    return "-" if value is None else f"{value}{unit}"
