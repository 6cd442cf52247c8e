"""A checkpoint file that takes longer to fetch than the worker's voucher grace does not stop
the worker: the requester fetches checkpoints beside its vouchers, not between them (a big
model's state over a slow link used to hold the vouchers back until the worker gave up).
Real job manager, worker service and sqlite; in-memory network; trio's mock clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.services.memnet import Hub
from tests.services.sim import PARAMS, inline_threads, small_market
from tests.services.test_market_sim import spec

SEGMENT_S = 3.0


async def test_a_slow_checkpoint_fetch_does_not_starve_the_worker_of_vouchers(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline_threads(monkeypatch)
    hub = Hub()
    market = await small_market(hub, tmp_path, [100], SEGMENT_S)
    requester, (worker,), jobs = market.requester, market.workers, market.jobs
    slow_s = 3 * PARAMS.voucher_grace_ms / 1000
    fetch = jobs.share.fetch
    fetching = 0

    async def slow_fetch(ref: Any, addrs_of: Any) -> Any:
        nonlocal fetching
        fetching += 1
        await trio.sleep(slow_s)  # a big file over a slow link
        return await fetch(ref, addrs_of)

    monkeypatch.setattr(jobs.share, "fetch", slow_fetch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(spec(1), tmp_path)
        with trio.fail_after(600):
            while (await jobs.store.task(job_id, 0)).state != "verified":
                await jobs.wait_for_change()
        outcomes = [a["outcome"] for a in await jobs.store.attempts(job_id)]
        assert outcomes == ["done"], f"the worker was stopped or replaced: {outcomes}"
        assert fetching >= 2, "checkpoints were fetched (slowly) while the task ran"
        nursery.cancel_scope.cancel()
    for node in (requester, worker):
        await node.db.close()
