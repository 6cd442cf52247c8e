"""A worker that runs task after task for weeks keeps in memory only what can still be asked.

An ended task's report (its last log lines and checkpoints) stays for the retention in which
its requester may still poll for it, then goes: a later poll is answered from sqlite, as
after a restart. A done task's datasets stay shareable with the job's other workers until
the job's deadline. Real worker service, blob share and sqlite; in-memory network (real
envelopes); trio's mock clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.envelope import new_nonce
from consensus.kinds import Wei, from_wire
from consensus.market.messages import TaskOrder, TaskRef, TaskReport, Voucher, Workload
from node.market import blobshare, worker
from node.market.supervision import METER
from node.market.task_runner import CANCEL, CONFIRM
from node.market.worker import ENDED_KEEP_MS, WorkerService
from p2p.reqresp import RequestRejected
from tests.services.memnet import Hub
from tests.services.sim import SimNode, inline_threads, make_node, worker_service
from tests.unit.market.test_data_sharing import D1, Shelf, order_for

JOB = b"m" * 16
SEGMENTS = 3
TASKS = 40
KEEP_S = ENDED_KEEP_MS / 1000  # PARAMS' voucher_hold_ms (2 min) is shorter


class DataShelf(Shelf):
    """Datasets a task places and uses, as the dataset service would, from no disk; the
    requester (any peer here) serves them all."""

    async def served_by(self, _peer: str, dataset_id: bytes) -> bool:
        return dataset_id in self.served

    @contextlib.asynccontextmanager
    async def using(self, _ids: Sequence[bytes]) -> AsyncIterator[None]:
        yield

    async def place(self, _dataset_id: bytes, path: Path, _holders: list[str]) -> None:
        path.mkdir(parents=True, exist_ok=True)


async def market(tmp_path: Path) -> tuple[SimNode, SimNode, WorkerService]:
    hub = Hub()
    requester = await make_node(hub, tmp_path / "requester", "requester")
    node = await make_node(hub, tmp_path / "worker", "worker")
    node.worker = worker_service(node, 100, segment_s=1.0)
    return requester, node, node.worker


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SimNode, SimNode, WorkerService]]:
    """A requester and a running worker service (in-memory network, threads inline); the
    service stops and both databases close on the way out."""
    inline_threads(monkeypatch)
    requester, node, service = await market(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            yield requester, node, service
            nursery.cancel_scope.cancel()
    finally:
        for n in (requester, node):
            await n.db.close()


async def run_task(
    requester: SimNode, service: WorkerService, idx: int, datasets: dict[str, bytes] | None = None
) -> TaskRef:
    """Orders task ``idx`` of the job from the worker and waits (on the worker's presence,
    which changes as the task ends) until its end is in sqlite."""
    ref = TaskRef(job_id=JOB, task=idx, attempt=0)
    now = requester.net.now_ms()
    order = TaskOrder(
        expires_ms=now + 60_000, nonce=new_nonce(), ref=ref, worker=service.net.peer_id,
        price_wei_per_s=Wei(100), gpus=1, budget_wei=Wei(10**12), deadline_ms=now + 3_600_000,
        workload=Workload(kind="exec", command=["x"], segments=SEGMENTS,
                          datasets=datasets or {}),
    )  # fmt: skip
    payload = {"order": requester.net.seal(order)}
    reply = await requester.net.request(service.net.peer_id, [], CONFIRM, payload, timeout_s=5)
    assert reply == {"accepted": True}
    with trio.fail_after(60):
        while service.works[ref].ended_ms is None:
            changed = trio.Event()
            service.presence_changed = changed.set
            await changed.wait()
    return ref


async def meter(requester: SimNode, service: WorkerService, ref: TaskRef) -> TaskReport:
    """A requester's poll: a voucher, answered with the report from the start of the log."""
    voucher = Voucher(expires_ms=requester.net.now_ms() + 60_000, nonce=new_nonce(), ref=ref,
                      worker=service.net.peer_id, amount_wei=Wei(0), seconds=0)  # fmt: skip
    payload = {"voucher": requester.net.seal(voucher), "since": 0, "log_offset": 0}
    reply = await requester.net.request(service.net.peer_id, [], METER, payload, timeout_s=5)
    return from_wire(TaskReport, reply, "report")


async def sleep_past(service: WorkerService, at_ms: int) -> None:
    """Drives the mock clock to a second past ``at_ms`` of the service's time."""
    await trio.sleep(max(0, at_ms + 1000 - service.net.now_ms()) / 1000)


async def test_ended_works_go_after_their_retention_and_later_polls_read_sqlite(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, monkeypatch) as (requester, node, service):
        refs = [await run_task(requester, service, i) for i in range(TASKS)]
        assert len(service.works) == TASKS, "all still within their retention"
        first, last = service.works[refs[0]], service.works[refs[-1]]
        await sleep_past(service, first.ended_ms + ENDED_KEEP_MS)  # type: ignore[operator]
        assert refs[0] not in service.works, "the first went once its retention passed"
        assert refs[-1] in service.works, "the last is still within its retention"
        report = await meter(requester, service, refs[-1])
        assert report.state == "done" and report.result == last.result
        assert report.log == [f"segment {i} done" for i in range(SEGMENTS)]
        assert [c.index for c in report.checkpoints] == list(range(SEGMENTS))

        await sleep_past(service, last.ended_ms + ENDED_KEEP_MS)  # type: ignore[operator]
        assert service.works == {}, "the tick loop woke for the last retention by itself"
        late = await meter(requester, service, refs[-1])  # as after a restart: from sqlite
        assert (late.state, late.result, late.log) == ("done", last.result, [])
        assert late.result_hash == last.result_hash
        cancel = {"ref": {"job_id": JOB, "task": TASKS - 1, "attempt": 0}}
        answer = await requester.net.request(node.net.peer_id, [], CANCEL, cancel, timeout_s=5)
        assert answer == {"ok": True}, "a forgotten ended task answers a cancel as before"


async def test_a_done_tasks_datasets_stay_shared_after_its_retention_until_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, monkeypatch) as (requester, node, service):
        node.share.datasets = shelf = DataShelf({D1})  # type: ignore[assignment]
        other = "12D3KooWOther"

        async def share() -> None:
            expires = requester.net.now_ms() + 60_000  # each shown once: no replay
            shown = replace(order_for(other, {"a": D1}, JOB), expires_ms=expires, nonce=new_nonce())
            sealed = requester.net.seal(shown)
            await service._on_share_data(requester.net.peer_id, {"order": sealed})

        ref = await run_task(requester, service, 0, {"a": D1})
        deadline = service.works[ref].order.deadline_ms
        await sleep_past(service, service.works[ref].ended_ms + ENDED_KEEP_MS)  # type: ignore[operator]
        assert service.works == {}
        await share()
        assert shelf.lent == [(other, D1)], "still a holder of the job's data"
        await sleep_past(service, deadline)
        with pytest.raises(RequestRejected, match="no task of this job"):
            await share()
        assert service._done_data == {}, "gone with the job's deadline"


async def test_a_long_jobs_asks_never_use_up_the_grants_and_they_go_with_the_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "MAX_LENT", 3)
    async with running(tmp_path, monkeypatch) as (requester, node, service):
        node.share.datasets = shelf = DataShelf({D1})  # type: ignore[assignment]

        async def share(to: str) -> None:
            expires = requester.net.now_ms() + 60_000  # each shown once: no replay
            shown = replace(order_for(to, {"a": D1}, JOB), expires_ms=expires, nonce=new_nonce())
            await service._on_share_data(
                requester.net.peer_id, {"order": requester.net.seal(shown)}
            )

        ref = await run_task(requester, service, 0, {"a": D1})
        for to in ["w1", "w2", "w3"] * 4:  # a job's orders ask again and again
            await share(to)
        assert len(shelf.lent) == 12, "the same three grants, asked for twelve times"
        with pytest.raises(RequestRejected, match="3 grants lent"):
            await share("w4")
        deadline = service.works[ref].order.deadline_ms
        await sleep_past(service, max(deadline, service.works[ref].ended_ms + ENDED_KEEP_MS))  # type: ignore[operator]
        assert service._lent == {}, "nothing of the requester's is held"
        assert shelf.lent == [], "so every grant lent for it is taken back"


async def test_grants_of_deleted_blobs_go_and_those_of_held_ones_still_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobshare, "GRANTS_SWEPT_FROM", 8)
    hub = Hub()
    holder = await make_node(hub, tmp_path / "holder", "holder")
    peer = await make_node(hub, tmp_path / "peer", "peer")
    share = holder.share
    (tmp_path / "kept").write_bytes(b"checkpoint")
    (tmp_path / "keyed").write_bytes(b"other")
    kept, keyed = await share.put(tmp_path / "kept"), await share.put(tmp_path / "keyed")
    share.grant(peer.net.peer_id, kept.hash)
    share.grant(peer.net.peer_id, keyed.hash)
    share.store.delete(keyed.hash.hex())  # its key is left: a peer with the ciphertext asks it
    for i in range(100):  # a task's files each, deleted by file expiry as it does
        (tmp_path / "f").write_bytes(i.to_bytes(4, "big"))
        gone = await share.put(tmp_path / "f")
        share.grant(peer.net.peer_id, gone.hash)
        share.keyring.forget(gone.hash.hex())
        share.store.delete(gone.hash.hex())
        assert len(share._grants) <= 16, f"{len(share._grants)} after {i + 1} blobs"
    assert share._is_granted(peer.net.peer_id, keyed.hash)
    with trio.fail_after(30):
        got = await peer.share.fetch(kept, lambda _p: [])
    assert got.read_bytes() == b"checkpoint"
    for n in (holder, peer):
        await n.db.close()
