"""Sharing a job's datasets among its workers: whom the requester asks, what a worker grants,
and the malformed requests it refuses (the daemon test runs the whole of it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import nacl.signing
import pytest

from consensus.errors import Invalid
from consensus.peer_id import peer_id_from_public_key
from node.market.data_sharing import SHARE_DATA, ask_holders, grant_shared, share_request
from node.market.store import TaskRow
from p2p.reqresp import RemoteError, RequestRejected
from tests.unit.market.factories import order

D1, D2 = b"\x01" * 32, b"\x02" * 32
PEER = peer_id_from_public_key(bytes(nacl.signing.SigningKey.generate().verify_key))


def row(idx: int, state: str, worker: str) -> TaskRow:
    return TaskRow(b"j" * 16, idx, state, 1, 0, worker, None, None, None, "")  # type: ignore[arg-type]


class Net:
    """Answers as each worker would: ``yes`` agree, the others refuse."""

    def __init__(self, yes: set[str]) -> None:
        self.yes, self.asked = yes, []  # type: ignore[var-annotated]

    async def request(self, peer: str, addrs: Any, protocol: str, payload: Any, **_: Any) -> Any:
        assert protocol == SHARE_DATA and payload == {"d": [D1], "p": "new"}
        self.asked.append(peer)
        if peer not in self.yes:
            raise RemoteError("not_found", "no task of yours here named it")
        return {"ok": True}


async def test_the_requester_asks_the_workers_holding_the_data_and_names_those_that_agree() -> None:
    tasks = [row(0, "running", "a"), row(1, "verified", "b"), row(2, "transferring", "c"),
             row(3, "running", "new"), row(4, "attested", "a"), row(5, "failed", "d")]  # fmt: skip
    net = Net(yes={"a"})
    assert await ask_holders(net, tasks, "new", [D1], lambda _p: []) == ["a"]  # type: ignore[arg-type]
    assert sorted(net.asked) == ["a", "b"]  # still fetching, itself, or failed: not asked
    assert await ask_holders(net, tasks, "new", [], lambda _p: []) == []  # type: ignore[arg-type]


class Shelf:
    def __init__(self) -> None:
        self.granted: list[tuple[str, bytes]] = []

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        self.granted.append((peer, dataset_id))


async def test_a_worker_grants_only_what_the_requesters_tasks_named() -> None:
    shelf = Shelf()
    with pytest.raises(RequestRejected, match="no task of yours here named 0202"):
        await grant_shared(shelf, [D1], [D1, D2], PEER)  # type: ignore[arg-type]
    assert shelf.granted == []
    assert await grant_shared(shelf, [D1, D2], [D2], PEER) == {"ok": True}  # type: ignore[arg-type]
    assert shelf.granted == [(PEER, D2)]
    with pytest.raises(RequestRejected, match="serves no datasets"):
        await grant_shared(None, [D1], [D1], PEER)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "a list of 1 to 8"),
        ({"d": [], "p": PEER}, "a list of 1 to 8"),
        ({"d": [D1] * 9, "p": PEER}, "a list of 1 to 8"),
        ({"d": [b"short"], "p": PEER}, "32-byte"),
        ({"d": [D1], "p": "not-a-peer"}, "not a peer id"),
        ({"d": [D1], "p": 7}, "not a peer id"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(payload: Any, reason: str) -> None:
    with pytest.raises(RequestRejected, match=reason):
        share_request(payload)


def test_a_well_formed_request_and_the_orders_holder_limit() -> None:
    assert share_request({"d": [D1, D2], "p": PEER}) == ([D1, D2], PEER)
    assert dataclasses.replace(order(), data_holders=["a"] * 4).data_holders == ["a"] * 4
    with pytest.raises(Invalid, match="at most 4"):
        dataclasses.replace(order(), data_holders=["a"] * 5)
