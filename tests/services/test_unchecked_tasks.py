"""A task that asked for verification and got no sentry's verdict is paid, as before, but says
so: its note, the job view's verification part, and ``job status``. And a requester's task
runners wait for its verify service, so nothing is auctioned or judged before it has loaded
the workers kept from each task.

Real job manager, worker service, verdicts and sqlite; in-memory network; trio's mock clock.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from node.cli_job import _human_job
from node.verify.requester import Verdicts
from node.verify.store import VerifyStore
from node.verify.view import verification_view
from tests.services.memnet import Hub
from tests.services.sim import inline_threads, small_market
from tests.services.test_market_sim import spec

CHECKED = replace(spec(1), verification="standard")


async def test_a_task_no_sentry_judged_is_paid_and_says_it_was_not_checked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_threads(monkeypatch)
    market = await small_market(Hub(), tmp_path, [100], 3.0)
    jobs, (worker,) = market.jobs, market.workers
    jobs.verdicts = Verdicts(jobs.net, VerifyStore(jobs.store.db), 1, lambda: False)
    jobs.verify_ready = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        job_id = await jobs.submit(CHECKED, tmp_path)
        await trio.sleep(60)
        assert (await jobs.store.task(job_id, 0)).state == "queued", "waits for verify"
        assert await jobs.store.attempts(job_id) == []
        jobs.verify_ready.set()
        with trio.fail_after(600):
            while (task := await jobs.store.task(job_id, 0)).state != "verified":
                await jobs.wait_for_change()
        assert task.reason == "unverified: no sentry in the network"
        attempts = await jobs.store.attempts(job_id)
        assert int(attempts[0]["payable_wei"]) > 0, "paid, as before"
        view = await verification_view(jobs.store.db, job_id, {"kind": "exec"}, [],
                                       attempts, sample_size=16)  # fmt: skip
        assert view["unchecked"] == [{"task": 0, "attempt": 0,
                                      "reason": "no sentry in the network"}]  # fmt: skip
        nursery.cancel_scope.cancel()
    for node in (market.requester, worker):
        await node.db.close()


def test_job_status_says_which_tasks_were_not_checked() -> None:
    checked = {
        "guarantee": "exec: 1 of 1 segments re-executed, P(detect 25 % faked) >= 100 %",
        "unchecked": [{"task": 0, "attempt": 0, "reason": "no sentry in the network"}],
    }
    view = {"job_id": "ab", "kind": "exec", "state": "verified", "reason": "", "spec": {},
            "task_states": [], "cost_wei": "0", "verification": checked}  # fmt: skip
    text = _human_job(view)
    assert "(not held for 1 task: no sentry's verdict)" in text
    assert "task 0#0 NOT CHECKED: no sentry in the network" in text
