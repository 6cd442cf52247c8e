"""A requester that settles on chain asks its bidders for stake: an unstaked worker is refused
whatever its price (and told why, once), one that names a stranger's staked account is
refused as forged, and the staked one wins; stake bonded later counts once the last reading
is a minute old. Real job manager, worker services, sqlite and contract (the embedded EVM);
in-memory network; trio's mock clock."""

from __future__ import annotations

import logging
from pathlib import Path

import nacl.signing
import pytest
import trio
import trio.testing
from blake3 import blake3

from node.chain.backend import Chain
from node.chain.stakes import STAKE_FRESH_MS, Stakes
from node.identity import NodeKeys, wallet_binding
from node.market.requester import JobManager
from node.market.worker import WorkerService
from tests.chain.conftest import ETH, make_net
from tests.chain.test_settlement_node import node_of
from tests.services.memnet import Hub
from tests.services.sim import PARAMS, inline_threads, small_market
from tests.services.test_market_sim import spec

MIN_STAKE = ETH // 10


def bind(worker: WorkerService, name: str, wallet_key: bytes, address: str) -> None:
    """Gives a sim worker a chain account, its binding signed by ``wallet_key``."""
    signing = nacl.signing.SigningKey(blake3(name.encode()).digest())  # as sim.make_node
    worker.chain_address = address
    worker.binding_sig = wallet_binding(NodeKeys(signing, wallet_key))


async def winner(jobs: JobManager, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The worker a one-task job ran on, and each bidder's outcome in its auction."""
    job_id = await jobs.submit(spec(1), tmp_path)
    while (await jobs.store.task(job_id, 0)).state != "verified":
        await jobs.wait_for_change()
    (attempt,) = await jobs.store.attempts(job_id)
    bids = {str(r["worker"]): str(r["outcome"]) for r in await jobs.store.bids(job_id)}
    return str(attempt["worker"]), bids


async def test_only_a_bidder_with_its_own_stake_wins(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inline_threads(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="node.market.worker")
    chain = make_net(Chain.embedded())
    market = await small_market(Hub(), tmp_path, [100, 150, 200], 3.0, PARAMS)
    jobs, (unstaked, forger, staked) = market.jobs, market.workers
    ws = [w.worker for w in market.workers]
    assert all(isinstance(w, WorkerService) for w in ws)
    bind(ws[0], "worker-0", chain.keys["worker"], chain.addr("worker"))  # type: ignore[arg-type]
    chain.client("worker2").stake(ETH)
    bind(ws[2], "worker-2", chain.keys["worker2"], chain.addr("worker2"))  # type: ignore[arg-type]
    # the forger names worker2's staked account, with a binding its own wallet signed
    bind(ws[1], "worker-1", chain.keys["other"], chain.addr("worker2"))  # type: ignore[arg-type]
    requester = node_of(chain, "requester", chain.client("requester"))
    await requester.service.start()
    jobs.stakes = Stakes(requester, MIN_STAKE, market.requester.net.now_ms)
    async with trio.open_nursery() as nursery:
        for node in market.workers:
            nursery.start_soon(node.worker.run)  # type: ignore[union-attr]
        await nursery.start(jobs.run)
        with trio.fail_after(600):
            won, bids = await winner(jobs, tmp_path)
            assert won == staked.net.peer_id
            assert (
                bids[unstaked.net.peer_id]
                == f"refused: stake 0 wei below the {MIN_STAKE} wei asked"
            )
            assert forger.net.peer_id not in bids, "rejected as forged before the auction"
            chain.client("worker").stake(ETH)  # bonded now; the requester read 0 just before
            won, _ = await winner(jobs, tmp_path)
            assert won == staked.net.peer_id, "the last reading stands for a minute"
            await trio.sleep(STAKE_FRESH_MS / 1000)  # the mock clock: a minute passes
            won, bids = await winner(jobs, tmp_path)
            assert won == unstaked.net.peer_id, "read again: staked, and the cheapest"
        nursery.cancel_scope.cancel()
    refused = [r for r in caplog.records if r.getMessage().startswith("bid refused")]
    warned = [r for r in refused if r.levelno == logging.WARNING]
    assert len(warned) == 1, "told once per requester, not per auction"
    assert warned[0].reason == f"stake 0 wei below the {MIN_STAKE} wei asked"  # type: ignore[attr-defined]
    forged = {r.reason for r in refused if "not bound" in getattr(r, "reason", "")}  # type: ignore[attr-defined]
    assert forged == {f"chain account {chain.addr('worker2')} is not bound to the bidder"}
    for node in (market.requester, *market.workers):
        await node.db.close()
