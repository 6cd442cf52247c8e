"""A requester that restarts mid-task finds its task still on the worker that had it.

Vouchers stop while the requester is down; past the order's grace the worker pauses the task
(computing nothing unpaid) rather than stopping it, and the first voucher of the restarted
requester resumes it. Before, the worker stopped the task and a restart slower than the grace
ran it twice. Real job manager, worker service and sqlite; in-memory network; mock clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from node.market.requester import JobManager
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, inline_threads, small_market
from tests.services.test_market_sim import spec

SEGMENT_S = 3.0
DOWN_S = 3 * PARAMS.voucher_grace_ms / 1000  # well past the grace, within the worker's hold


async def test_a_requester_down_past_the_grace_resumes_its_paused_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_threads(monkeypatch)
    hub = Hub()
    market = await small_market(hub, tmp_path, [100], SEGMENT_S)
    requester, (worker,) = market.requester, market.workers
    scope = trio.CancelScope()

    async def run_jobs(jobs: JobManager, *, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
        with scope:
            await jobs.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.worker.run)  # type: ignore[union-attr]
        await nursery.start(run_jobs, market.jobs)
        job_id = await market.jobs.submit(spec(1), tmp_path)
        with trio.fail_after(600):
            while (await market.jobs.store.task(job_id, 0)).state != "running":
                await market.jobs.wait_for_change()
        hub.kill(requester.net.peer_id)  # as kill -9 would: gone from the network, not run
        scope.cancel()
        await trio.sleep(DOWN_S)
        (work,) = worker.worker.works.values()  # type: ignore[union-attr]
        assert work.freezer.frozen and work.state == "running", "paused, not stopped"
        status = await worker.worker.status()  # type: ignore[union-attr]
        assert status["paused"] == [work.order.ref.text()], "`idlegrid worker` shows it"
        hub.revive(requester.net.peer_id)
        scope = trio.CancelScope()
        jobs = JobManager(requester.net, requester.store, requester.share, tmp_path / "s", PARAMS)
        await nursery.start(run_jobs, jobs)
        with trio.fail_after(600):
            while (await jobs.store.job(job_id))["state"] not in ("verified", "failed"):
                await jobs.wait_for_change()
        assert not work.freezer.frozen and work.state == "done"
        assert (await worker.worker.status())["paused"] == []  # type: ignore[union-attr]
        attempts = await jobs.store.attempts(job_id)
        assert len(attempts) == 1, "the task ran once, on the worker that had it"
        nursery.cancel_scope.cancel()
    for node in (requester, worker):
        await node.db.close()
