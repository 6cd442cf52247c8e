"""Hostile peers during a job on a settling localnet: each is contained and the job completes.

- worker-1, the cheapest, computes honestly but serves every blob piece with a bit flipped
  (``tests/integration/corrupt_server.py``): the requester refuses its result, blames it, pays
  it nothing and has the task re-run on worker-2;
- a peer outside the network floods every node with malformed and forged gossip while a job
  runs: each node rejects it, bans it, and the job is verified all the same.

After each, the escrow invariant holds on chain and the job's escrow is returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import NodeInfo, State
from node.market.packing import unpack
from p2p.gossip import DEFAULT_NETWORK, topic_name, wire_topic
from tests.e2e.helpers import ANSWER_JOB as JOB
from tests.e2e.helpers import ANSWER_WORK as WORK
from tests.e2e.helpers import api, escrow_returned, poll, submit, wait_final
from tests.e2e.invariant import assert_escrow_invariant
from tests.hostile import hostile_peer
from tests.integration.test_hostile_gossip import bad_messages

CORRUPT = {"worker.executor_wrapper": "tests.integration.corrupt_server"}
FLOOD_MESSAGES = 200  # to every node at once, far past the five a ban takes


def start(root: Path, overrides: dict[str, dict[str, Any]] | None = None) -> State:
    return net.start(root, requesters=1, workers=2, sentries=1, chain_mode="auto",
                     overrides=overrides or {})  # fmt: skip


@pytest.fixture
def liar_net(tmp_path: Path) -> Iterator[State]:
    state = start(tmp_path / "ln", {"worker-1": CORRUPT})
    try:
        yield state
    finally:
        stop_all(state.procs())


@pytest.fixture
def plain_net(tmp_path: Path) -> Iterator[State]:
    state = start(tmp_path / "ln")
    try:
        yield state
    finally:
        stop_all(state.procs())


def peer_view(node: NodeInfo, peer_id: str) -> dict[str, Any]:
    peers = api(node).get("/v1/peers")["peers"]
    return next(p for p in peers if p["peer_id"] == peer_id)


def test_a_worker_serving_corrupt_results_is_refused_unpaid_and_replaced(
    liar_net: State, tmp_path: Path
) -> None:
    requester, liar = liar_net.node("requester-1"), liar_net.node("worker-1")
    job_id = submit(requester, tmp_path / "job", JOB, {"work.py": WORK})
    view = wait_final(requester, job_id, 150)
    assert view["state"] == "verified", view["reason"]
    first, again = view["attempts"]
    assert first["worker"] == liar.peer_id
    assert first["payable_wei"] == "0" and "corrupt result" in first["outcome"]
    assert again["worker"] == liar_net.node("worker-2").peer_id
    (result,) = api(requester).get(f"/v1/job/results?id={job_id}")["results"]
    unpack(Path(result["path"]), tmp_path / "got")
    assert (tmp_path / "got" / "out" / "answer.txt").read_text() == f"{sum(range(1000))}\n"
    blamed = peer_view(requester, liar.peer_id)
    assert blamed["score"] < 0 and "bytes do not match the hash" in blamed["last_fault"]
    poll("escrow returned", lambda: escrow_returned(requester), 90)
    assert_escrow_invariant(liar_net)
    assert "Traceback" not in requester.log.read_text()


async def test_a_flood_of_malformed_gossip_is_banned_everywhere_and_the_job_completes(
    plain_net: State, tmp_path: Path
) -> None:
    requester = plain_net.node("requester-1")
    presence, nodes = (wire_topic(topic_name(n), DEFAULT_NETWORK) for n in ("presence", "nodes"))
    cases = list(bad_messages().values())
    async with hostile_peer([presence, nodes]) as (evil, pubsub, _):
        for node in plain_net.nodes:
            peer = ID.from_base58(await evil.connect(await p2p_addr(node)))
            await pubsub.wait_for_mesh(peer, presence, 15)  # publishes reach mesh peers only
        job_id = await trio.to_thread.run_sync(
            submit, requester, tmp_path / "job", JOB, {"work.py": WORK}
        )
        for i in range(FLOOD_MESSAGES):
            topic, data = cases[i % len(cases)]
            await pubsub.publish(topic, data)
            await trio.sleep(0.01)  # pacing, so the flood overlaps the job
        view = await trio.to_thread.run_sync(wait_final, requester, job_id, 150)
    assert view["state"] == "verified", view["reason"]
    for node in plain_net.nodes:
        seen = peer_view(node, evil.peer_id)
        assert seen["banned"] is True, (node.name, seen)
        assert node.proc.alive(), f"{node.name} died"
        assert "Traceback" not in node.log.read_text(), node.name
    await trio.to_thread.run_sync(poll, "escrow returned", lambda: escrow_returned(requester), 90)
    await trio.to_thread.run_sync(assert_escrow_invariant, plain_net)


async def p2p_addr(node: NodeInfo) -> str:
    status = await trio.to_thread.run_sync(lambda: api(node).get("/v1/status"))
    return str(status["p2p"]["addrs"][0])
