"""A worker grants its requester each task's checkpoints and result, and takes them back
once the requester can no longer fetch them, not a week later when file expiry deletes the
files (a set per file held that long: hundreds more every ten minutes of a soak).

A done task's files stay until its requester has taken the result, however late (it
fetches every checkpoint it wants before it asks for the result), then ``GRANTS_KEEP_MS``
more; any other ended task's stay ``GRANTS_KEEP_MS`` past its report's retention (a
requester fetches what a report listed for up to its lost_after_ms after reading it). Real
worker services, job manager, blob shares and sqlite; in-memory network; trio's mock clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.market.messages import TaskRef
from node.market.task_runner import CANCEL
from node.market.worker import ENDED_KEEP_MS, GRANTS_KEEP_MS, WorkerService
from tests.services.memnet import Hub
from tests.services.sim import SimNode, inline_threads, small_market
from tests.services.test_requester_memory_bound import ended, spec
from tests.services.test_worker_memory import JOB, run_task, running, sleep_past

JOBS = 4


def granted(share_of: SimNode, peer: str) -> set[bytes]:
    """The blobs ``share_of`` grants ``peer``."""
    grants = share_of.share._grants.items()
    return {bytes.fromhex(d) for d, peers in grants if peer in peers}


def files_of(service: WorkerService, ref: TaskRef) -> set[bytes]:
    work = service.works[ref]
    assert work.result is not None
    return {c.blob.hash for c in work.checkpoints if c.blob is not None} | {work.result.hash}


async def test_a_collected_tasks_grants_go_and_jobs_after_it_leave_none(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_threads(monkeypatch)
    market_ = await small_market(Hub(), tmp_path, [100], 3.0)
    jobs, node = market_.jobs, market_.workers[0]
    requester = market_.requester.net.peer_id
    service = node.worker
    assert service is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        await nursery.start(jobs.run)
        for i in range(JOBS):  # one after another, as a soak runs them
            job_id = await jobs.submit(spec(1), tmp_path)
            await ended(jobs, job_id)
            assert (await jobs.store.job(job_id))["state"] == "verified"  # type: ignore[index]
            [work] = [w for r, w in service.works.items() if r.job_id == job_id]
            files = files_of(service, work.order.ref)
            assert len(files) == 5, "4 checkpoints and the result"
            assert granted(node, requester) == files, f"job {i}: only its files, still granted"
            assert service._uncollected == {}, "the requester took the result"
            await sleep_past(service, service.net.now_ms() + GRANTS_KEEP_MS)
            assert granted(node, requester) == set(), f"job {i}: taken back"
        await sleep_past(service, service.net.now_ms() + ENDED_KEEP_MS)
        assert service.works == {} and not service._revoking
        assert node.share._grants == {}
        nursery.cancel_scope.cancel()
    for n in (market_.requester, node):
        await n.db.close()


async def test_an_uncollected_result_stays_granted_until_taken_however_late(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, monkeypatch) as (requester, node, service):
        ref = await run_task(requester, service, 0)
        work = service.works[ref]
        files, result = files_of(service, ref), work.result
        assert result is not None and work.ended_ms is not None
        await sleep_past(service, work.ended_ms + ENDED_KEEP_MS + 3 * GRANTS_KEEP_MS)
        assert service.works == {}, "its report is forgotten"
        assert granted(node, requester.net.peer_id) == files, "nothing taken yet: all kept"
        with trio.fail_after(30):  # a requester back long after: collects as before
            got = await requester.share.fetch(result, lambda _p: [])
        assert got.exists()
        await sleep_past(service, service.net.now_ms() + GRANTS_KEEP_MS - 2000)
        assert granted(node, requester.net.peer_id) == files, "a lost key reply is asked again"
        await sleep_past(service, service.net.now_ms() + 1000)
        assert granted(node, requester.net.peer_id) == set()


async def test_a_cancelled_tasks_checkpoints_go_after_its_report_and_the_fetch_window(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, monkeypatch) as (requester, node, service):
        first = trio.Event()
        grant = node.share.grant

        def grant_and_tell(peer: str, digest: bytes) -> None:
            grant(peer, digest)
            first.set()

        monkeypatch.setattr(node.share, "grant", grant_and_tell)

        async def cancel_after_a_segment() -> None:
            await first.wait()  # its first checkpoint is granted
            payload = {"ref": {"job_id": JOB, "task": 0, "attempt": 0}}
            await requester.net.request(node.net.peer_id, [], CANCEL, payload, timeout_s=5)

        async with trio.open_nursery() as nursery:  # the cancel lands while the task runs
            nursery.start_soon(cancel_after_a_segment)
            ref = await run_task(requester, service, 0)
        work = service.works[ref]
        assert work.state == "cancelled" and work.ended_ms is not None
        files = {c.blob.hash for c in work.checkpoints if c.blob is not None}
        assert files and service._uncollected == {}
        await sleep_past(service, work.ended_ms + ENDED_KEEP_MS)
        assert service.works == {}
        assert granted(node, requester.net.peer_id) == files, "a fetch may follow the report"
        await sleep_past(service, work.ended_ms + ENDED_KEEP_MS + GRANTS_KEEP_MS)
        assert granted(node, requester.net.peer_id) == set()
