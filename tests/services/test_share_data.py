"""A worker asked to serve a job's datasets to another worker: the real worker service, an
in-memory network (tests/integration/test_dataset_sharing.py runs it on daemons)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p.reqresp import RequestRejected
from tests.services.memnet import Hub
from tests.services.sim import small_market
from tests.unit.market.test_data_sharing import D1, PEER, Shelf


async def test_a_worker_grants_no_stranger_and_none_at_all_when_it_keeps_its_upload(
    tmp_path: Path,
) -> None:
    market = await small_market(Hub(), tmp_path, [100], 3.0)
    node = market.workers[0]
    assert node.worker is not None
    node.share.datasets = shelf = Shelf()  # type: ignore[assignment]
    payload = {"d": [D1], "p": PEER}
    with pytest.raises(RequestRejected, match="no task of yours here named"):
        await node.worker._on_share_data("12D3KooWrequester", payload)  # none of its tasks
    node.worker.share_data = False  # worker.share_task_data = false
    with pytest.raises(RequestRejected, match="does not share task data"):
        await node.worker._on_share_data("12D3KooWrequester", payload)
    assert shelf.granted == []
