"""A node that is both worker and sentry reads its GPUs and probes its sandbox once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from config.schema import WorkerSettings
from node.market import service
from node.market.service import Market


async def test_the_machine_is_probed_once_for_every_role(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    profile, sandbox = object(), object()

    def discover() -> Any:
        calls.append("nvml")
        return profile

    def worker_sandbox(worker: WorkerSettings, work_root: Path) -> Any:
        calls.append("bwrap")
        return sandbox

    monkeypatch.setattr(service, "discover", discover)
    monkeypatch.setattr(service, "worker_sandbox", worker_sandbox)
    market = Market(None, None, None, None)  # type: ignore[arg-type]
    seen: list[Any] = []

    async def role() -> None:  # the worker's market service and the sentry's replays
        seen.append(await market.machine(WorkerSettings(), Path("work")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(role)
        nursery.start_soon(role)
    assert calls == ["nvml", "bwrap"]
    assert seen == [(profile, sandbox), (profile, sandbox)]
