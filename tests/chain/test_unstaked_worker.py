"""A worker with no stake is still paid, but sentries could slash nothing if it cheated: its
daemon says so at start (on the embedded EVM)."""

from __future__ import annotations

from pathlib import Path

from node.chain.backend import Chain
from node.chain.payee import Payee
from storage.db import Database
from tests.chain.conftest import ETH, make_net
from tests.chain.test_settlement_node import StubNet, node_of


async def test_a_worker_without_stake_is_told_at_start(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    worker = net.client("worker")
    chain = node_of(net, "worker", worker)
    await chain.service.start()
    async with await Database.open(tmp_path / "worker.db") as db:
        payee = Payee(chain, db, StubNet())  # type: ignore[arg-type]
        assert await payee.warn_if_unstaked(), "no stake: warned"
        worker.stake(ETH)
        assert not await payee.warn_if_unstaked(), "staked: nothing to say"
