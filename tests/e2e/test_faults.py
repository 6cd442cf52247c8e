"""Faults on a whole localnet (daemons, one chain, settlement on): the work completes, and the
money adds up afterwards (tests/e2e/invariant.py, read from the chain).

Synchronised by polling the daemons' APIs within deadlines, never by sleeping a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import NodeInfo, State
from tests.e2e.helpers import (
    BPS,
    FEE_BPS,
    by_peer,
    escrow_returned,
    job_view,
    kill9,
    paid_in_full,
    poll,
    restart,
    submit,
    wait_final,
)
from tests.e2e.invariant import assert_escrow_invariant, chain_contract, paid_to_workers

OUTAGE_S = 60

SLOW_JOB = """
name = "slow"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "slow.py"]
estimate_s = 12

[io]
inputs = ["slow.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "1000 gwei"
deadline = "5m"
"""

SLOW = """
import pathlib, time
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
for i in range(24):
    time.sleep(0.5)
    print("tick", i, flush=True)
(out / "done.txt").write_text("ok\\n")
"""

SEGMENTS, STEPS_PER_SEGMENT = 6, 8  # a segment takes about 3.2 s
SLOW_TRAIN_JOB = f"""
name = "slow-train"
kind = "train"
verification = "standard"

[runtime]
entry = "train.py"
steps = {SEGMENTS * STEPS_PER_SEGMENT}
segments = {SEGMENTS}
seed = 7
estimate_s = 20
params = {{ lr = "0.01" }}

[io]
inputs = ["train.py"]
outputs = ["model.ckpt"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "1000 gwei"
deadline = "10m"
"""

# A step that takes a while (the sleep leaves the state alone, so replays still match).
SLOW_TRAIN = """
import time
import torch
from torch import nn


def dataset(ctx):
    generator = torch.Generator().manual_seed(ctx.seed)
    inputs = torch.randn(256, 4, generator=generator)
    return inputs, (inputs.sum(dim=1) > 0).long()


def init(ctx):
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=float(ctx.params["lr"]))


def step(ctx, model, optimizer, batch):
    time.sleep(0.4)
    inputs, targets = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()
"""


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[State]:
    state = net.start(tmp_path / "ln", requesters=1, workers=2, sentries=1, chain_mode="auto")
    try:
        yield state
    finally:
        stop_all(state.procs())


def running(requester: NodeInfo, job_id: str, checkpoints: int = 0) -> dict[str, Any] | None:
    task = job_view(requester, job_id)["task_states"][0]
    return task if task["state"] == "running" and task["checkpoints"] >= checkpoints else None


def jailed_processes(node: NodeInfo) -> list[psutil.Process]:
    """Processes still working in ``node``'s data dir: its daemon's, or orphans of a task."""
    work = str(Path(node.home) / "work")
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if work in text:
            found.append(proc)
    return found


def test_requester_killed_mid_job_restarts_and_the_job_completes_and_settles(
    localnet: State, tmp_path: Path
) -> None:
    requester = localnet.node("requester-1")
    job_id = submit(requester, tmp_path / "job", SLOW_JOB, {"slow.py": SLOW})
    poll("task running", lambda: running(requester, job_id), 60)
    kill9(requester)  # mid-task, vouchers flowing
    restart(requester)

    view = wait_final(requester, job_id, 120)
    assert view["state"] == "verified", view["reason"]
    assert len(view["attempts"]) == 1, "the task was not run twice"
    worker = by_peer(localnet, view["attempts"][0]["worker"])

    theirs = poll("the worker's claim", lambda: paid_in_full(worker), 180)
    mine = poll("escrow returned", lambda: escrow_returned(requester), 60)
    vouched = int(theirs["payee"]["vouched_wei"])
    paid = int(theirs["earned_wei"])
    funded = int(mine["escrow"]["jobs"]["returned"]["funded_wei"])
    returned = int(mine["escrow"]["jobs"]["returned"]["returned_wei"])
    assert vouched > 0
    assert paid * BPS >= vouched * (BPS - FEE_BPS), "the worker got its vouchers, less the fee"
    assert paid <= vouched, "never more than the requester signed"
    # A voucher signed and recorded just before the kill, but never delivered, stays in the
    # requester's pool (its own money, withdrawable), never with the worker: so >=, not ==.
    assert funded - returned >= vouched, "escrow kept what was vouched, returned the rest"
    assert funded - returned <= vouched + int(view["attempts"][0]["price_wei_per_s"]), (
        "at most one voucher interval (1 s at the worker's price) kept beyond the vouchers"
    )
    assert_escrow_invariant(localnet)


def test_worker_killed_mid_task_resumes_elsewhere_from_its_last_checkpoint(
    localnet: State, tmp_path: Path
) -> None:
    requester = localnet.node("requester-1")
    job_id = submit(requester, tmp_path / "job", SLOW_TRAIN_JOB, {"train.py": SLOW_TRAIN})
    task = poll("two checkpoints in", lambda: running(requester, job_id, 2), 90)
    first = by_peer(localnet, task["worker"])
    at_checkpoint = int(job_view(requester, job_id)["attempts"][0]["vouched_wei"])
    rate = first.price_wei_per_s or 0

    def into_the_next_segment() -> bool | None:  # vouched for seconds past the checkpoint
        return (
            int(job_view(requester, job_id)["attempts"][0]["vouched_wei"])
            >= (at_checkpoint + 2 * rate)
            or None
        )

    poll("two seconds into the next segment", into_the_next_segment, 10)
    kill9(first)
    poll("the killed worker's task processes gone", lambda: not jailed_processes(first) or None, 10)

    view = wait_final(requester, job_id, 180)
    assert view["state"] == "verified", view["reason"]
    lost, done = view["attempts"]
    assert lost["worker"] == first.peer_id and done["worker"] != first.peer_id
    assert view["task_states"][0]["checkpoints"] == SEGMENTS, "resumed, not started again"
    # The requester owes the lost worker its seconds up to the checkpoint the task resumed from.
    assert int(lost["payable_wei"]) < int(lost["vouched_wei"])

    restart(first)  # its operator brings it back: it hands in its vouchers for the lost task
    second = by_peer(localnet, done["worker"])
    poll("the second worker paid", lambda: paid_in_full(second), 180)
    payable, key = int(lost["payable_wei"]), first.address.lower()

    def first_paid() -> int | None:
        paid = paid_to_workers(localnet).get(key, 0)
        return paid if paid * BPS >= payable * (BPS - FEE_BPS) else None

    paid = poll("the first worker paid to its checkpoint", first_paid, 120)
    assert paid <= payable, "not for the seconds after its last checkpoint"
    poll("escrow returned", lambda: escrow_returned(requester), 60)
    assert_escrow_invariant(localnet)


def anchored_epochs(state: State) -> list[int]:
    _, contract = chain_contract(state)
    return [int(e["args"]["epoch"]) for e in contract.events.Anchored().get_logs(from_block=0)]


def test_sentry_killed_mid_epoch_restarts_and_anchors_each_epoch_once(
    localnet: State, tmp_path: Path
) -> None:
    requester, sentry = localnet.node("requester-1"), localnet.node("sentry-1")
    short = SLOW.replace("range(24)", "range(6)")
    job_id = submit(requester, tmp_path / "job", SLOW_JOB, {"slow.py": short})
    view = wait_final(requester, job_id, 90)
    assert view["state"] == "verified", view["reason"]
    worker = by_peer(localnet, view["attempts"][0]["worker"])
    before = anchored_epochs(localnet)
    paid_before = paid_in_full(worker) is not None
    kill9(sentry)  # the worker's voucher is in; its epoch is open, or anchored but not final
    restart(sentry)

    poll("the worker paid", lambda: paid_in_full(worker), 180)
    poll("escrow returned", lambda: escrow_returned(requester), 60)
    epochs = anchored_epochs(localnet)
    # The restarted sentry did the rest: it anchored the open epoch, or (when the epoch was
    # anchored just before the kill) saw it through its window to the payout.
    assert len(epochs) > len(before) or not paid_before, "nothing was settled after the restart"
    assert len(epochs) == len(set(epochs)), f"an epoch anchored twice: {epochs}"
    assert_escrow_invariant(localnet)


def test_chain_stopped_for_a_minute_work_goes_on_and_settlement_catches_up(
    localnet: State, tmp_path: Path
) -> None:
    requester = localnet.node("requester-1")
    short = SLOW.replace("range(24)", "range(8)")
    first = submit(requester, tmp_path / "a", SLOW_JOB, {"slow.py": short})
    poll("task running", lambda: running(requester, first), 60)
    chain = psutil.Process(localnet.chain.proc.pid)
    chain.suspend()  # the endpoint hangs: requests time out rather than being refused
    stopped_at = time.monotonic()
    try:
        second = submit(requester, tmp_path / "b", SLOW_JOB, {"slow.py": short})
        views = [wait_final(requester, job, OUTAGE_S - 5) for job in (first, second)]
        assert [v["state"] for v in views] == ["verified"] * 2, [v["reason"] for v in views]
        assert chain.status() == psutil.STATUS_STOPPED, "the work finished during the outage"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))  # the fault's length
    finally:
        chain.resume()

    for peer in {v["attempts"][0]["worker"] for v in views}:
        worker = by_peer(localnet, peer)
        poll(f"{worker.name} paid after the outage", partial(paid_in_full, worker), 180)
    poll("escrow returned", lambda: escrow_returned(requester), 90)
    assert_escrow_invariant(localnet)
