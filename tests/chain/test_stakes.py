"""The requester's reading of stake on the embedded EVM: a bidder's bonded stake only, read
again once a minute old, the last reading kept through a chain outage, none before the first;
only a peer bound to a chain account with the contract's sentry minimum bonded is a known
sentry, and a verdict counts only while its sentry is one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from consensus.market.messages import TaskRef
from consensus.verify.messages import Verdict
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.sentry_set import refresh
from node.chain.stakes import STAKE_FRESH_MS, Stakes, UnboundAddress
from node.identity import NodeKeys, wallet_binding
from node.peerbook import PeerBook
from node.verify.requester import Verdicts
from node.verify.service import known_sentries
from node.verify.store import VerifyStore
from storage.db import Database
from tests.chain.conftest import ETH, make_net
from tests.chain.test_settlement_node import node_of

REF = TaskRef(job_id=b"j" * 16, task=0, attempt=0)
VERDICT = Verdict(expires_ms=10**13, nonce=b"n" * 16, ref=REF,
                  worker="w", attestation=b"a" * 32, passed=True, sampled=[0], seed=b"s" * 32,
                  evidence=b"e" * 32)  # fmt: skip


async def test_stake_is_read_bonded_refreshed_and_kept_through_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = make_net(Chain.embedded())
    requester = node_of(net, "requester", net.client("requester"))
    await requester.service.start()
    now = [0]
    stakes = Stakes(requester, ETH // 10, lambda: now[0])
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


async def test_a_verdict_counts_only_while_its_sentry_is_staked_as_one(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    node = node_of(net, "requester", net.client("requester"))
    await node.service.start()
    minimum = int(net.client("requester").params()["sentry_min_stake_wei"])
    keys = {who: NodeKeys(NodeKeys.generate().signing_key, net.keys[who])
            for who in ("sentry1", "sentry2")}  # fmt: skip
    net.client("sentry1").stake(minimum)
    net.client("sentry2").stake(minimum - 1)
    book = PeerBook("me")
    for k in keys.values():  # both say they are sentries, each with its own bound account
        book.heard(k.peer_id, [], ["sentry"], "v", 1,
                   chain=(bytes.fromhex(k.address[2:]), wallet_binding(k)))  # fmt: skip
    roles = SimpleNamespace(node=SimpleNamespace(roles=("requester",)))
    ctx = SimpleNamespace(network=SimpleNamespace(book=book, staked_sentries=None),
                          keys=NodeKeys.generate(), settings=roles)  # fmt: skip
    now = [0]
    stakes = Stakes(node, 0, lambda: now[0], whom="sentry")
    await refresh(ctx, stakes, minimum)  # type: ignore[arg-type]
    async with await Database.open(tmp_path / "node.sqlite") as db:
        verdicts = Verdicts(SimpleNamespace(now_ms=lambda: 0), VerifyStore(db), 1, lambda: True,
                            lambda peer: peer in known_sentries(ctx))  # type: ignore[arg-type]  # fmt: skip
        await verdicts._heard(VERDICT, keys["sentry2"].peer_id, b"raw")  # a wei short
        assert await verdicts.outcome(REF, timeout_ms=0) == ("unverified", "no verdict within 0 ms")
        await verdicts._heard(VERDICT, keys["sentry1"].peer_id, b"raw")
        assert await verdicts.outcome(REF, timeout_ms=0) == ("verified", "verified by 1 sentries")
        net.client("sentry1").request_unstake(1)  # unbonding: below the sentry minimum
        now[0] += STAKE_FRESH_MS
        await refresh(ctx, stakes, minimum)  # type: ignore[arg-type]
        assert await verdicts.outcome(REF, timeout_ms=0) == (
            "unverified",
            "no verdict within 0 ms",
        ), "asked when counted: its sentry is one no more"


async def test_only_sentries_staked_as_sentries_are_known_with_chain_settlement() -> None:
    net = make_net(Chain.embedded())
    node = node_of(net, "requester", net.client("requester"))
    await node.service.start()
    minimum = int(net.client("requester").params()["sentry_min_stake_wei"])
    keys = {who: NodeKeys(NodeKeys.generate().signing_key, net.keys[who])
            for who in ("sentry1", "sentry2", "sentry3", "worker")}  # fmt: skip
    net.client("sentry1").stake(minimum)
    net.client("sentry2").stake(minimum - 1)
    net.client("sentry3").stake(minimum)
    book = PeerBook("me")

    def hello(who: str, roles: list[str], chain: tuple[bytes, bytes] | None) -> None:
        book.heard(keys[who].peer_id, [], roles, "v", 1, chain=chain)

    def bound(who: str, by: str | None = None) -> tuple[bytes, bytes]:
        signer = NodeKeys(keys[who].signing_key, keys[by or who].wallet_key)
        return bytes.fromhex(keys[who].address[2:]), wallet_binding(signer)

    hello("sentry1", ["sentry"], bound("sentry1"))  # staked: counts
    hello("sentry2", ["sentry"], bound("sentry2"))  # a wei short
    hello("sentry3", ["sentry"], bound("sentry3", by="sentry1"))  # a binding it did not sign
    hello("worker", ["sentry"], None)  # says it is a sentry, names no account
    me = NodeKeys.generate()  # a requester: not itself a sentry
    roles = SimpleNamespace(node=SimpleNamespace(roles=("requester",)))
    ctx = SimpleNamespace(network=SimpleNamespace(book=book, staked_sentries=None), keys=me,
                          settings=roles)  # fmt: skip
    everyone = sorted(keys[w].peer_id for w in keys)
    assert known_sentries(ctx) == everyone, "not checked yet: whoever says so"  # type: ignore[arg-type]
    await refresh(ctx, Stakes(node, 0, lambda: 0, whom="sentry"), minimum)  # type: ignore[arg-type]
    assert known_sentries(ctx) == [keys["sentry1"].peer_id]  # type: ignore[arg-type]
    ctx.keys = NodeKeys(NodeKeys.generate().signing_key, net.keys["sentry3"])  # staked
    ctx.settings = SimpleNamespace(node=SimpleNamespace(roles=("sentry",)))
    await refresh(ctx, Stakes(node, 0, lambda: 0, whom="sentry"), minimum)  # type: ignore[arg-type]
    assert known_sentries(ctx) == sorted([keys["sentry1"].peer_id, ctx.keys.peer_id])  # type: ignore[arg-type]
