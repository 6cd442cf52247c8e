"""A resumed task attempt is attested and judged on real daemons.

A requester, a sentry and two workers on 127.0.0.1. A three-segment train task (real PyTorch on
the CPU, each step slowed so there is a task to kill) starts on the cheaper worker, which is
killed (-9) once the requester holds its first checkpoint. The task resumes on the other worker
from that checkpoint; that worker attests segments ``first..2`` from it, the sentry challenges
and replays them (the first one from the resume checkpoint, which the resumed worker serves),
and the requester gets a verdict, long before its verdict timeout: a pass when the resumed
worker trains honestly, a fail when it fakes its segments (``cheating_executor``). Synchronised
on what the daemons log, never on sleeps.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid, peer_id
from tests.integration.test_market_daemons import field, wait_for_fields
from tests.integration.test_verify_daemons import wait_all

pytest.importorskip("torch")

ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_MARKET_BID_WINDOW_MS="1000",
    IDLEGRID_MARKET_VOUCHER_INTERVAL_MS="500",
    IDLEGRID_MARKET_LOST_AFTER_MS="3000",
    IDLEGRID_VERIFY_COMMIT_WINDOW_MS="300",
    IDLEGRID_VERIFY_REVEAL_WINDOW_MS="300",
    IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS="600000",  # a verdict, not the timeout, ends the wait
)
WORKERS = {"w-first": 100, "w-resumed": 200}  # gwei per second: w-first wins the first award
JOB = """
name = "train-resumed"
kind = "train"
verification = "standard"

[runtime]
entry = "train.py"
steps = 6
segments = 3
seed = 7
estimate_s = 10
params = { lr = "0.01", hidden = "16", batch_size = "16", precision = "fp32" }

[io]
inputs = ["train.py"]
outputs = ["model.ckpt"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"
deadline = "5m"
"""
TRAIN = """
import time

import torch
from torch import nn


def dataset(ctx):
    generator = torch.Generator().manual_seed(ctx.seed)
    inputs = torch.randn(96, 4, generator=generator)
    return inputs, (inputs.sum(dim=1) > 0).long()


def init(ctx):
    model = nn.Sequential(nn.Linear(4, int(ctx.params["hidden"])), nn.ReLU(),
                          nn.Linear(int(ctx.params["hidden"]), 2))
    return model, torch.optim.Adam(model.parameters(), lr=float(ctx.params["lr"]))


def step(ctx, model, optimizer, batch):
    time.sleep(0.5)  # two steps a segment: the first worker is killed mid-task
    inputs, targets = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()
"""


@pytest.fixture
def network(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Daemon]]:
    """The daemons; ``request.param`` says whether the resuming worker cheats."""
    cheat = {"IDLEGRID_WORKER_EXECUTOR_WRAPPER": "tests.integration.cheating_executor"}
    extra = {"w-first": {}, "w-resumed": cheat if request.param == "cheating" else {}}
    daemons: dict[str, Daemon] = {}
    try:
        home = tmp_path / "requester"
        assert idlegrid(home, "init", env=ENV).returncode == 0
        daemons["requester"] = Daemon(home, (), ENV).wait_started()
        status = json.loads(idlegrid(home, "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        envs = {"sentry": ENV} | {
            name: ENV | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": str(gwei * 10**9)} | extra[name]
            for name, gwei in WORKERS.items()
        }
        for name, env in envs.items():
            role = "sentry" if name == "sentry" else "worker"
            assert idlegrid(tmp_path / name, "init", "--role", role, env=env).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, env)  # they start side by side
        for name in envs:
            daemons[name].wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


@pytest.mark.slow
@pytest.mark.parametrize("network", ["honest", "cheating"], indirect=True)
def test_a_resumed_attempt_is_attested_challenged_and_judged(
    network: dict[str, Daemon], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    honest = "[honest]" in request.node.name
    requester, sentry = network["requester"], network["sentry"]
    ids = {name: peer_id(d.home) for name, d in network.items()}
    job_id, start = resume_after_a_kill(network, ids, tmp_path)
    judging = wait_for_fields(sentry, "judging", timeout=60, worker=ids["w-resumed"])
    assert field(judging, "first") == str(start)
    sampled = [int(i) for i in field(judging, "sampled").split(",")]
    assert sampled[-1] == 2 and all(start <= i for i in sampled), judging
    # Every segment of a 3-segment job is sampled: the run hashes no points, the sentry replays
    # whole segments (points are judged in tests/gpu/test_points_judged.py).
    assert field(judging, "points") == "1" and set(field(judging, "stops").split(",")) == {"1"}
    assert honest or sampled == list(range(start, 3)), "every segment it faked is sampled"
    verdict = sentry.wait_for("verdict", timeout=90)
    assert f"worker={ids['w-resumed']}" in verdict and f"passed={honest}" in verdict, verdict
    outcome = requester.wait_for("verification", timeout=30)
    assert f"outcome={'verified' if honest else 'rejected'}" in outcome, outcome

    view = json.loads(idlegrid(requester.home, "job", "status", job_id, "--json", env=ENV).stdout)
    lost, resumed = view["attempts"][:2]
    assert (lost["worker"], resumed["worker"]) == (ids["w-first"], ids["w-resumed"])
    assert [v["passed"] for v in view["verification"]["verdicts"]] == [honest]
    reputation = view["verification"]["reputation"][ids["w-resumed"]]
    [stated] = view["verification"]["resumed"]
    assert (stated["attempt"], stated["first"]) == (1, start)
    assert stated["guarantee"].startswith(f"train: {3 - start} of segments {start}..2 re-executed")
    if honest:
        wait_all(requester, [("task moved", "job_state=verified")], timeout=30)
        assert reputation > 500_000
    else:
        assert resumed["outcome"].startswith("failed verification"), resumed
        assert resumed["payable_wei"] == "0" and reputation < 500_000
    for daemon in network.values():
        assert "Traceback" not in daemon.output()


def resume_after_a_kill(
    network: dict[str, Daemon], ids: dict[str, str], tmp_path: Path
) -> tuple[str, int]:
    """Submits the job, kills its first worker once a checkpoint is held, and waits for the
    resumed attempt's attestation; returns the job id and the first attested segment."""
    requester = network["requester"]
    wait_all(requester, [("worker status", ids[w], "new=available") for w in WORKERS]
             + [("peer discovered", ids["sentry"])])  # fmt: skip
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "job.toml").write_text(JOB)
    (spec_dir / "train.py").write_text(TRAIN)
    done = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    first = requester.wait_for("task awarded", timeout=60)
    assert field(first, "worker") == ids["w-first"]
    held = requester.wait_for("checkpoint held", timeout=60)
    network["w-first"].proc.send_signal(signal.SIGKILL)
    network["w-first"].proc.wait(timeout=10)
    resume_at = int(field(held, "segment")) + 1  # later checkpoints may be held too, not fewer
    requester.wait_for("worker lost, failing over", timeout=30)
    again = requester.wait_for("task awarded", timeout=60)
    assert field(again, "worker") == ids["w-resumed"]
    attested = wait_for_fields(network["w-resumed"], "task attested", timeout=90)
    start = int(field(attested, "first"))
    assert resume_at <= start <= 2, attested
    return str(json.loads(done.stdout)["job_id"]), start
