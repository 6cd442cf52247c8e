"""The requester's reading of a bidder's stake on the embedded EVM: bonded stake only, read
again once a minute old, the last reading kept through a chain outage, none before the first."""

from __future__ import annotations

import pytest

from node.chain.backend import Chain
from node.chain.bidder_stakes import STAKE_FRESH_MS, BidderStakes, UnboundAddress
from node.chain.client import Settlement
from node.identity import NodeKeys, wallet_binding
from tests.chain.conftest import ETH, make_net
from tests.chain.test_settlement_node import node_of


async def test_stake_is_read_bonded_refreshed_and_kept_through_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = make_net(Chain.embedded())
    requester = node_of(net, "requester", net.client("requester"))
    await requester.service.start()
    now = [0]
    stakes = BidderStakes(requester, ETH // 10, lambda: now[0])
    keys = {who: NodeKeys(NodeKeys.generate().signing_key, net.keys[who])
            for who in ("worker", "worker2")}  # fmt: skip
    bidders = {who: (k.peer_id, k.address, wallet_binding(k)) for who, k in keys.items()}

    worker = net.client("worker")
    worker.stake(2 * ETH)
    worker.request_unstake(ETH)  # unbonding: it may leave before a task ends, so not counted
    assert await stakes.stake_of(*bidders["worker"]) == ETH
    worker.request_unstake(ETH)
    assert await stakes.stake_of(*bidders["worker"]) == ETH, "a fresh reading is not asked again"
    now[0] += STAKE_FRESH_MS
    assert await stakes.stake_of(*bidders["worker"]) == 0, "a minute old: read again"

    def outage(self: Settlement, address: str | None = None) -> dict[str, int]:
        raise ConnectionError("chain unreachable")

    monkeypatch.setattr(Settlement, "stake_of", outage)
    now[0] += STAKE_FRESH_MS
    assert await stakes.stake_of(*bidders["worker"]) == 0, "the last reading stands"
    assert await stakes.stake_of(*bidders["worker2"]) is None, "never read: unknown"

    peer, address, _ = bidders["worker"]
    with pytest.raises(UnboundAddress, match="is not bound to the bidder"):
        await stakes.stake_of(peer, address, bidders["worker2"][2])  # another's binding
    with pytest.raises(UnboundAddress, match="0x12 is not bound"):
        await stakes.stake_of(peer, "0x12", bidders["worker"][2])  # not an address
