"""NVIDIA GPUs through NVML, via the ``pynvml`` functions (or a stand-in with the same names).

Only :func:`read_nvidia` touches NVML. A missing library or driver, or a failing ``nvmlInit``,
becomes :class:`NvmlFailed` with the reason; a field a GPU does not support (power on some
boards, PCIe in a VM) becomes ``None`` rather than an error. NVML calls block: the daemon makes
them in a thread.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from gpu.devices import Gpu, gpu_class

MB = 2**20


class NvmlFailed(Exception):
    """NVML cannot be used here: no library, no driver, or it failed to start."""


def load_pynvml() -> Any:
    with warnings.catch_warnings():  # pynvml 12+ warns that it wraps nvidia-ml-py
        warnings.simplefilter("ignore")
        try:
            import pynvml  # noqa: PLC0415 - an optional native dependency, loaded when asked
        except ImportError as exc:
            raise NvmlFailed(f"the pynvml package is not installed ({exc})") from None
    return pynvml


def read_nvidia(nvml: Any | None = None) -> tuple[str, str, list[Gpu]]:
    """(driver version, CUDA version, GPUs) from NVML.

    Raises:
        NvmlFailed: NVML's library or the driver is missing, or NVML failed to start.
    """
    lib = load_pynvml() if nvml is None else nvml
    try:
        lib.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, OSError...
        raise NvmlFailed(f"no NVIDIA driver (NVML: {_describe(exc)})") from None
    try:
        driver = _text(lib.nvmlSystemGetDriverVersion())
        cuda = _optional(lib, lambda: _cuda_version(lib.nvmlSystemGetCudaDriverVersion()))
        count = lib.nvmlDeviceGetCount()
        gpus = [_read_gpu(lib, i) for i in range(count)]
    except lib.NVMLError as exc:
        raise NvmlFailed(f"NVML failed while reading the GPUs: {_describe(exc)}") from None
    finally:
        with contextlib.suppress(lib.NVMLError):  # nothing left to release that matters
            lib.nvmlShutdown()
    return driver, cuda or "", gpus


def _read_gpu(lib: Any, index: int) -> Gpu:
    handle = lib.nvmlDeviceGetHandleByIndex(index)
    name = _text(lib.nvmlDeviceGetName(handle))
    memory = lib.nvmlDeviceGetMemoryInfo(handle)
    total_mb = int(memory.total) // MB

    def opt(call: Any) -> Any:
        return _optional(lib, call)

    power = opt(lambda: int(lib.nvmlDeviceGetPowerUsage(handle)) // 1000)
    limit = opt(lambda: int(lib.nvmlDeviceGetEnforcedPowerLimit(handle)) // 1000)
    return Gpu(
        index=index,
        name=name,
        uuid=_text(lib.nvmlDeviceGetUUID(handle)),
        gpu_class=gpu_class(name, total_mb),
        vram_total_mb=total_mb,
        vram_free_mb=int(memory.free) // MB,
        utilisation_pct=opt(lambda: int(lib.nvmlDeviceGetUtilizationRates(handle).gpu)),
        temperature_c=opt(
            lambda: int(lib.nvmlDeviceGetTemperature(handle, lib.NVML_TEMPERATURE_GPU))
        ),
        power_w=power,
        power_limit_w=limit,
        compute_capability=opt(lambda: _capability(lib, handle)) or "",
        pcie=opt(lambda: _pcie(lib, handle)) or "",
        processes=opt(lambda: len(lib.nvmlDeviceGetComputeRunningProcesses(handle))),
    )


def _capability(lib: Any, handle: Any) -> str:
    major, minor = lib.nvmlDeviceGetCudaComputeCapability(handle)
    return f"{major}.{minor}"


def _pcie(lib: Any, handle: Any) -> str:
    generation = lib.nvmlDeviceGetCurrPcieLinkGeneration(handle)
    width = lib.nvmlDeviceGetCurrPcieLinkWidth(handle)
    bus = _text(lib.nvmlDeviceGetPciInfo(handle).busId)
    return f"gen{generation} x{width} at {bus}"


def _optional(lib: Any, call: Any) -> Any:
    """A field some GPUs or drivers do not report: ``None`` instead of an error."""
    try:
        return call()
    except lib.NVMLError:
        return None


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
