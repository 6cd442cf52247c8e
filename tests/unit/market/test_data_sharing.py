"""Sharing a job's datasets among its workers: whom the requester asks, and what a worker
lends to whom (the daemon test runs the whole of it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from consensus.errors import Invalid
from consensus.market.messages import TaskRef, Workload
from node.market.data_sharing import SHARE_DATA, Held, ask_holders, lend_to
from node.market.store import MarketStore
from p2p.reqresp import RemoteError, RequestRejected
from storage.db import Database
from tests.unit.market.factories import order

D1, D2 = b"\x01" * 32, b"\x02" * 32
JOB = b"j" * 16
R = "requester"


class Net:
    """Answers as each worker would: ``yes`` agree, ``slow`` never answer, others refuse."""

    def __init__(self, yes: set[str], slow: set[str] = frozenset(), away: set[str] = frozenset()):  # type: ignore[assignment]
        self.yes, self.slow, self.away, self.asked = yes, slow, away, []  # type: ignore[var-annotated]

    def connected(self, peer: str) -> bool:
        return peer not in self.away

    async def request(self, peer: str, addrs: Any, protocol: str, payload: Any, **_: Any) -> Any:
        assert protocol == SHARE_DATA and payload == {"order": b"sealed"}
        self.asked.append(peer)
        if peer in self.slow:
            await trio.sleep_forever()
        if peer not in self.yes:
            raise RemoteError("not_found", "no task of this job of yours here names them")
        return {"ok": True}


async def test_the_requester_names_the_connected_holders_that_agree_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Net(yes={"a", "c"}, slow={"b"}, away={"d"})
    with trio.fail_after(10):  # the slow one is waited for ASK_S, not for ever
        found = await ask_holders(net, ["a", "b", "c", "d", "e"], b"sealed", lambda _p: [])  # type: ignore[arg-type]
    assert found == ["a", "c"]
    assert sorted(net.asked) == ["a", "b", "c", "e"]  # "d": not connected, not dialled


class Shelf:
    def __init__(self, served: set[bytes]) -> None:
        self.served, self.lent = served, []  # type: ignore[var-annotated]

    async def served_by(self, peer: str, dataset_id: bytes) -> bool:
        return peer == R and dataset_id in self.served

    async def lend(self, peer: str, dataset_id: bytes) -> None:
        self.lent.append((peer, dataset_id))

    async def unlend(self, peer: str, dataset_id: bytes) -> None:
        self.lent.remove((peer, dataset_id))


def order_for(worker: str, datasets: dict[str, bytes], job: bytes = JOB) -> Any:
    ref = TaskRef(job_id=job, task=1, attempt=0)
    workload = Workload(kind="exec", command=["x"], datasets=datasets)
    return dataclasses.replace(order(ref, worker=worker), workload=workload)


HELD = [Held(R, JOB, frozenset({D1, D2}), "running"), Held("other", b"k" * 16, frozenset(), "done")]


async def test_a_worker_lends_the_orders_worker_what_the_requester_shares_and_serves() -> None:
    shelf = Shelf(served={D1, D2})
    assert await lend_to(shelf, HELD, R, order_for("w2", {"a": D1})) == [D1]  # type: ignore[arg-type]
    assert shelf.lent == [("w2", D1)]


@pytest.mark.parametrize(
    ("asker", "held", "the_order", "served", "reason"),
    [
        ("mallory", HELD, order_for("w2", {"a": D1}), {D1}, "no task of this job of yours"),
        (R, HELD, order_for("w2", {"a": D1}, job=b"k" * 16), {D1}, "no task of this job"),
        (R, [Held(R, JOB, frozenset({D1}), "fetching")], order_for("w2", {"a": D1}), {D1},
         "no task of this job"),
        (R, [Held(R, JOB, frozenset({D1}), "failed")], order_for("w2", {"a": D1}), {D1},
         "no task of this job"),
        (R, HELD, order_for("w2", {"a": D1, "b": b"\x03" * 32}), {D1}, "no task of this job"),
        (R, HELD, order_for("w2", {"a": D1, "b": D2}), {D1}, "you do not serve 0202"),
        (R, HELD, order_for("w2", {}), {D1}, "no datasets to share"),
    ],
)  # fmt: skip
async def test_a_worker_lends_nothing_else(
    asker: str, held: list[Held], the_order: Any, served: set[bytes], reason: str
) -> None:
    shelf = Shelf(served)
    with pytest.raises(RequestRejected, match=reason):
        await lend_to(shelf, held, asker, the_order)  # type: ignore[arg-type]
    assert shelf.lent == []


async def test_the_requester_asks_the_workers_of_running_tasks_first(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "node.sqlite") as db:
        store = MarketStore(db)
        job = {"job_id": JOB, "name": "j", "spec": b"", "inputs": None, "inputs_size": 0,
               "deadline_ms": 10**13}  # fmt: skip
        await store.insert_job(job, 6, 0)
        rows = [(0, "verified", "old"), (1, "running", "new"), (2, "bidding", ""),
                (3, "transferring", "slow"), (4, "attested", "new"),
                (5, "failed", "gone")]  # fmt: skip
        await db.transaction(lambda c: c.executemany(
            "UPDATE tasks SET state = ?, worker = ? WHERE job_id = ? AND idx = ?",
            [(state, worker, JOB, idx) for idx, state, worker in rows],
        ))  # fmt: skip
        states = ("running", "attested", "verified", "settled")
        assert await store.workers_in(JOB, states, 5) == [("new", "running"), ("old", "verified")]
        assert await store.workers_in(JOB, states, 1) == [("new", "running")]


def test_an_order_names_at_most_four_holders() -> None:
    assert dataclasses.replace(order(), data_holders=["a"] * 4).data_holders == ["a"] * 4
    with pytest.raises(Invalid, match="at most 4"):
        dataclasses.replace(order(), data_holders=["a"] * 5)
