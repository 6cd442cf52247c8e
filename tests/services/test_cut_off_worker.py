"""A worker cut off from its requester stops computing before anyone else is given its task.

The requester replaces a worker it has not heard from for ``lost_after_ms``; the worker pauses
once its vouchers have been missing for the grace the order gave it, and stops the paused task
when its own hold runs out. A requester configured
with a grace longer than ``lost_after_ms`` used to let both copies run at once, the cut-off one
unpaid. Real job manager, worker services and sqlite; in-memory network; trio's mock clock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
import trio.testing

from node.market.requester import JobManager
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, small_market
from tests.services.test_market_sim import spec

SEGMENT_S = 3.0
# What an operator might set: a long grace (a worker may ride out slow vouchers), a short
# failover. The order must still not let the worker outlive its replacement's award.
LONG_GRACE = dataclasses.replace(PARAMS, voucher_grace_ms=20_000, lost_after_ms=4000)


async def attempts_of(jobs: JobManager, job_id: bytes, count: int) -> list[dict[str, object]]:
    """Waits (on task moves, never a fixed time) until ``count`` attempts exist."""
    while True:
        rows = [dict(r) for r in await jobs.store.attempts(job_id)]
        if len(rows) >= count:
            return rows
        await jobs.wait_for_change()


async def test_the_cut_off_worker_has_stopped_when_its_task_is_awarded_again(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub()
    market = await small_market(hub, tmp_path, [100, 200], SEGMENT_S, LONG_GRACE)
    requester, (cheap, dear), jobs = market.requester, market.workers, market.jobs
    async with trio.open_nursery() as nursery:
        for node in (cheap, dear):
            nursery.start_soon(node.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(spec(1), tmp_path)
        with trio.fail_after(600):
            first = (await attempts_of(jobs, job_id, 1))[0]
            assert first["worker"] == cheap.net.peer_id
            while (await jobs.store.task(job_id, 0)).state != "running":
                await jobs.wait_for_change()
            hub.kill(cheap.net.peer_id)  # a cut, not a death: its services keep running
            second = (await attempts_of(jobs, job_id, 2))[1]
        assert second["worker"] == dear.net.peer_id
        (cut,) = cheap.worker.works.values()  # type: ignore[union-attr]
        assert cut.freezer.frozen, f"{cut.state}, not paused, when its task went elsewhere"
        assert cut.state == "running", "paused, its work kept for a requester that comes back"
        await trio.sleep(LONG_GRACE.voucher_hold_ms / 1000)  # the mock clock: the hold runs out
        assert cut.state == "stopped", f"still {cut.state} after the worker's hold"
        assert "vouchers stopped" in cut.error, cut.error
        nursery.cancel_scope.cancel()
    for node in (requester, cheap, dear):
        await node.db.close()
