"""A stand-in for the ``pynvml`` module: the same function names, errors and return shapes.

NVML needs an NVIDIA driver, which test machines lack; :mod:`gpu.nvml` is exercised against
this instead (and against the real library on a lent GPU machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    total_mb: int = 24564
    free_mb: int = 24000
    util: int = 3
    temp: int = 41
    power_mw: int | None = 35_500
    limit_mw: int = 450_000
    cc: tuple[int, int] = (8, 9)
    pcie: tuple[int, int] | None = (4, 16)
    bus: bytes = b"00000000:01:00.0"
    processes: list[Any] = field(default_factory=list)
    graphics: list[Any] = field(default_factory=list)


class FakeNvml:
    """``FakeNvml(gpus)`` behaves like pynvml on a machine with those GPUs."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(self, gpus: list[FakeGpu], *, driver: str = "550.54.14",
                 missing: bool = False, fail_count: bool = False) -> None:  # fmt: skip
        self.gpus, self.driver, self.missing, self.fail_count = gpus, driver, missing, fail_count
        self.initialised = 0

    def nvmlInit(self) -> None:
        if self.missing:
            raise NVMLError_LibraryNotFound()
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        if self.fail_count:
            raise NVMLError("Unknown Error")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(total=h.total_mb * 2**20, free=h.free_mb * 2**20)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=h.util, memory=1)

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return h.temp

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if h.power_mw is None:
            raise NVMLError_NotSupported()
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return h.limit_mw

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return h.cc

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeGpu) -> int:
        if h.pcie is None:
            raise NVMLError_NotSupported()
        return h.pcie[0]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeGpu) -> int:
        assert h.pcie is not None
        return h.pcie[1]

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(busId=h.bus)

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[Any]:
        return h.processes

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: FakeGpu) -> list[Any]:
        return h.graphics
