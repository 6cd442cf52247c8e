"""A worker told that a requester is in arrears (``node/chain/arrears.py`` finds it) stops that
requester's running task, bids no more for it, and the task completes on another worker.
Real job manager, worker services and sqlite; in-memory network; trio's mock clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.services.memnet import Hub
from tests.services.sim import PARAMS, inline_threads, small_market
from tests.services.test_cut_off_worker import attempts_of
from tests.services.test_market_sim import spec

SEGMENT_S = 3.0


async def test_a_requester_in_arrears_loses_its_worker_and_the_task_moves_on(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline_threads(monkeypatch)
    hub = Hub()
    market = await small_market(hub, tmp_path, [100, 200], SEGMENT_S, PARAMS)
    requester, (cheap, dear), jobs = market.requester, market.workers, market.jobs
    why = "requester 0xabc in arrears: 5 wei of ours unanchored through 3 anchors"
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
            cheap.worker.block_requesters({requester.net.peer_id: why})  # type: ignore[union-attr]
            second = (await attempts_of(jobs, job_id, 2))[1]
            while (await jobs.store.task(job_id, 0)).state != "verified":
                await jobs.wait_for_change()
        assert second["worker"] == dear.net.peer_id
        (stopped,) = cheap.worker.works.values()  # type: ignore[union-attr]
        assert (stopped.state, stopped.error) == ("stopped", why)
        # the retry's demand reached the blocked worker too: no bid, and the reason is kept
        decisions = [d["decision"] for d in cheap.worker.decisions]  # type: ignore[union-attr]
        assert why in decisions, decisions
        nursery.cancel_scope.cancel()
    for node in (requester, cheap, dear):
        await node.db.close()
