"""A worker shown an order and asked to serve its datasets to the order's worker: the real
worker service and signed orders, an in-memory network (tests/integration/
test_dataset_sharing.py runs it on daemons)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from consensus.envelope import new_nonce
from p2p.reqresp import RequestRejected
from tests.services.memnet import Hub
from tests.services.sim import small_market
from tests.unit.market.test_data_sharing import D1, Shelf, order_for


async def test_a_worker_checks_the_orders_signer_and_lends_nothing_when_it_keeps_its_upload(
    tmp_path: Path,
) -> None:
    market = await small_market(Hub(), tmp_path, [100, 200], 3.0)
    requester, node, other = market.requester, market.workers[0], market.workers[1]
    assert node.worker is not None
    node.share.datasets = shelf = Shelf({D1})  # type: ignore[assignment]
    shown = order_for(other.net.peer_id, {"a": D1})

    def sealed() -> dict[str, bytes]:  # each shown once: a shown order cannot be replayed
        expires = requester.net.now_ms() + 60_000
        return {"order": requester.net.seal(replace(shown, expires_ms=expires, nonce=new_nonce()))}

    with pytest.raises(RequestRejected, match="not the peer that sent it"):
        await node.worker._on_share_data(other.net.peer_id, sealed())  # not its own order
    once = sealed()
    with pytest.raises(RequestRejected, match="no task of this job of yours"):
        await node.worker._on_share_data(requester.net.peer_id, once)
    with pytest.raises(RequestRejected, match="replayed"):
        await node.worker._on_share_data(requester.net.peer_id, once)
    node.worker.share_data = False  # worker.share_task_data = false
    with pytest.raises(RequestRejected, match="does not share task data"):
        await node.worker._on_share_data(requester.net.peer_id, sealed())
    assert shelf.lent == []
