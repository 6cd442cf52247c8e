"""What this machine has: its GPUs (through NVML) or, without an NVIDIA driver, a CPU-only profile.

:func:`discover` never raises for a missing or broken driver: the profile says what it found and
why it fell back (``note``). Only NVIDIA GPUs run work today; AMD, Intel and Apple devices are
detected where it is cheap (sysfs, the platform) and listed as ``others`` so the owner sees why
they are not offered.

The worker offers one GPU class (the most common among its GPUs) with the count and the smallest
VRAM of that class; a CPU-only machine offers one ``cpu`` unit.
"""

from __future__ import annotations

import os
import platform
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

CPU_CLASS = "cpu"
_VENDORS = {"0x1002": "amd", "0x8086": "intel"}  # PCI vendor ids in /sys/class/drm
_NOISE = {"nvidia", "geforce", "tesla", "quadro", "pcie", "hbm", "hbm2", "hbm2e", "hbm3",
          "hbm3e", "nvl"}  # fmt: skip
_SIZE = re.compile(r"\d+gb?")
_FORM = re.compile(r"(sxm|pcie)\d*")


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML reports it; ``None`` where the driver does not say."""

    index: int
    name: str
    uuid: str
    gpu_class: str
    vram_total_mb: int
    vram_free_mb: int | None = None
    utilisation_pct: int | None = None
    temperature_c: int | None = None
    power_w: int | None = None
    power_limit_w: int | None = None
    compute_capability: str = ""  # "8.9"
    pcie: str = ""  # "gen4 x16 at 0000:01:00.0"
    processes: int | None = None  # compute processes running on it now (the owner's or ours)


@dataclass(frozen=True)
class Profile:
    """The machine: GPUs usable for work, other devices seen, the CPU and memory."""

    backend: str  # "nvidia" or "cpu"
    gpus: list[Gpu] = field(default_factory=list)
    driver: str = ""
    cuda: str = ""  # the CUDA version the driver supports, e.g. "12.4"
    note: str = ""  # why there are no GPUs, or what went wrong reading them
    others: list[str] = field(default_factory=list)
    cpu_model: str = ""
    cpu_cores: int = 0
    ram_mb: int = 0

    def offer(self) -> tuple[str, int, int]:
        """(GPU class, count, VRAM per GPU in MB) this machine offers to the market."""
        if not self.gpus:
            return CPU_CLASS, 1, 0
        gpu_class, count = Counter(g.gpu_class for g in self.gpus).most_common(1)[0]
        vram = min(g.vram_total_mb for g in self.gpus if g.gpu_class == gpu_class)
        return gpu_class, count, vram

    def offered_gpus(self) -> list[Gpu]:
        """The GPUs of the offered class, the ones tasks are given."""
        gpu_class = self.offer()[0]
        return [g for g in self.gpus if g.gpu_class == gpu_class]

    def to_json(self) -> dict[str, Any]:
        gpu_class, count, vram = self.offer()
        return {**asdict(self), "offer": {"gpu_class": gpu_class, "count": count, "vram_mb": vram}}


def gpu_class(name: str, vram_mb: int) -> str:
    """A short market class from the model name and memory: ``rtx4090-24g``, ``h100-80g``.

    Vendor and product-line words, memory sizes and form factors in the name are dropped (the
    memory is appended from what the driver reports, rounded to whole GB).
    """
    words = re.split(r"[\s_/\-]+", name.lower())
    kept = [w for w in words if w and w not in _NOISE and not _SIZE.fullmatch(w)]
    kept = [w for w in kept if not _FORM.fullmatch(w)]
    model = re.sub(r"[^a-z0-9]", "", "".join(kept)) or "gpu"
    return f"{model}-{round(vram_mb / 1024)}g"


def discover(nvml: Any | None = None, sysfs: Path = Path("/sys/class/drm")) -> Profile:
    """Reads the machine. ``nvml`` is the pynvml module or a stand-in with the same functions.

    Args:
        nvml: defaults to the real ``pynvml``; tests pass a fake.
        sysfs: where DRM cards are listed, for AMD and Intel GPUs.
    """
    from gpu.nvml import NvmlFailed, read_nvidia  # noqa: PLC0415 - keeps pynvml's import lazy

    host = _host()
    others = _other_devices(sysfs)
    try:
        driver, cuda, gpus = read_nvidia(nvml)
    except NvmlFailed as exc:
        return Profile("cpu", note=f"CPU only: {exc}", others=others, **host)
    if not gpus:
        note = f"CPU only: NVIDIA driver {driver} reports no GPUs"
        return Profile("cpu", driver=driver, cuda=cuda, note=note, others=others, **host)
    return Profile("nvidia", gpus, driver, cuda, others=others, **host)


def _host() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count() or 1,
        "ram_mb": psutil.virtual_memory().total // 2**20,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _other_devices(sysfs: Path) -> list[str]:
    """GPUs we see but do not run work on yet, each with the reason."""
    found = []
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        found.append("apple silicon GPU (not used: only NVIDIA GPUs run work yet)")
    try:
        cards = sorted(p for p in sysfs.glob("card[0-9]*") if "-" not in p.name)
    except OSError:
        cards = []
    for card in cards:
        try:
            vendor = (card / "device" / "vendor").read_text(encoding="ascii").strip()
        except OSError:
            continue
        if vendor in _VENDORS:
            found.append(
                f"{_VENDORS[vendor]} GPU at {card.name} (not used: only NVIDIA GPUs run work yet)"
            )
    return found
