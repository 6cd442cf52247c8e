"""Idle-only workers: the owner's own GPU processes make the worker stop bidding."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import trio

from gpu import nvml as nvml_mod
from gpu.nvml import NvmlFailed
from gpu.owner import foreign_gpu_processes, our_pids
from node.market import service
from tests.gpu.fake_nvml import FakeGpu, FakeNvml


def test_only_processes_that_are_not_ours_count() -> None:
    gpu = FakeGpu(processes=[SimpleNamespace(pid=10), SimpleNamespace(pid=11)],
                  graphics=[SimpleNamespace(pid=12)])  # fmt: skip
    other = FakeGpu(processes=[SimpleNamespace(pid=13)])
    fake = FakeNvml([gpu, other])
    assert foreign_gpu_processes(fake, [0], ours={10}) == [11], "graphics (pid 12) not counted"
    assert foreign_gpu_processes(fake, [0, 1], ours={10, 11}) == [13]
    assert fake.initialised == 0
    with pytest.raises(NvmlFailed):
        foreign_gpu_processes(FakeNvml([], missing=True), [0], ours=set())


def test_our_pids_include_this_process() -> None:
    assert os.getpid() in our_pids()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.changed = trio.Event()

    def owner_activity(self, busy: bool) -> None:
        self.seen.append(busy)
        self.changed.set()
        self.changed = trio.Event()


async def test_watcher_reports_the_owner_coming_and_going(monkeypatch: pytest.MonkeyPatch) -> None:
    owner = SimpleNamespace(pid=2**22 + 1)  # not a pid of ours
    gpu = FakeGpu(processes=[owner])
    monkeypatch.setattr(nvml_mod, "load_pynvml", lambda: FakeNvml([gpu]))
    monkeypatch.setattr(service, "OWNER_POLL_S", 0.01)
    recorder = Recorder()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.watch_owner, recorder, [0])
            await recorder.changed.wait()
            assert recorder.seen == [True]
            gpu.processes = []
            await recorder.changed.wait()
            assert recorder.seen == [True, False]
            nursery.cancel_scope.cancel()
