"""Is the machine's owner using the GPUs? For idle-only workers (``worker.idle_only``).

The owner is busy when a process that is not ours (the daemon and everything it started,
workloads included) runs compute work (CUDA, OpenCL) on one of the GPUs we offer, as NVML lists
them. Graphics processes do not count: a desktop's display server is one at all times, and it
would keep an idle-only worker from ever working (so a game is not noticed either). A CPU-only
worker, or one whose NVML fails, cannot tell and reports "not busy"; the worker's log says so
once.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil

from gpu import nvml as nvml_module
from gpu.nvml import NvmlFailed


def our_pids() -> set[int]:
    """This process and all its descendants (sandboxed workloads among them)."""
    me = psutil.Process(os.getpid())
    return {me.pid, *(child.pid for child in me.children(recursive=True))}


def foreign_gpu_processes(nvml: Any | None, indices: list[int], ours: set[int]) -> list[int]:
    """PIDs of processes not in ``ours`` using any of the GPUs ``indices``.

    Raises:
        NvmlFailed: NVML cannot be used here.
    """
    lib = nvml_module.load_pynvml() if nvml is None else nvml
    try:
        lib.nvmlInit()
    except Exception as exc:  # as in gpu.nvml: no library or no driver
        raise NvmlFailed(f"no NVIDIA driver ({exc})") from None
    try:
        foreign: set[int] = set()
        for index in indices:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            foreign |= {p.pid for p in lib.nvmlDeviceGetComputeRunningProcesses(handle)} - ours
        return sorted(foreign)
    except lib.NVMLError as exc:
        raise NvmlFailed(f"NVML failed listing GPU processes: {exc}") from None
    finally:
        with contextlib.suppress(lib.NVMLError):
            lib.nvmlShutdown()
