"""A worker that no longer holds the result it reported (its disk failed, or it deleted it)
does not leave the task waiting until the job's deadline: once it has said so for
``lost_after_ms`` the task runs on another worker from the last checkpoint the requester
holds. Real job manager, worker services and sqlite; in-memory network; trio's mock clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from node.market.worker import Work
from tests.services.memnet import Hub
from tests.services.sim import inline_threads, small_market
from tests.services.test_market_sim import SEGMENTS, spec

SEGMENT_S = 3.0


async def test_a_result_the_worker_no_longer_holds_is_made_again_elsewhere(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline_threads(monkeypatch)
    market = await small_market(Hub(), tmp_path, [100, 150], SEGMENT_S)
    jobs, (cheap, dear) = market.jobs, market.workers
    assert cheap.worker is not None and dear.worker is not None

    async def lose_the_result(work: Work) -> None:
        assert work.result is not None
        cheap.share.keyring.forget(work.result.hash.hex())

    cheap.worker.on_done = lose_the_result
    async with trio.open_nursery() as nursery:
        for worker in (cheap, dear):
            nursery.start_soon(worker.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(spec(1), tmp_path)
        with trio.fail_after(600):
            while (await jobs.store.task(job_id, 0)).state != "verified":
                await jobs.wait_for_change()
        attempts = await jobs.store.attempts(job_id)
        assert [a["worker"] for a in attempts] == [cheap.net.peer_id, dear.net.peer_id]
        assert attempts[0]["outcome"].startswith("result gone"), attempts[0]["outcome"]
        rate = int(attempts[0]["price_wei"])
        # paid up to the last checkpoint held (the final one: every segment's is fetched)
        assert 0 < int(attempts[0]["payable_wei"]) <= rate * SEGMENTS * SEGMENT_S
        assert attempts[1]["outcome"] == "done"
        nursery.cancel_scope.cancel()
    for node in (market.requester, cheap, dear):
        await node.db.close()
