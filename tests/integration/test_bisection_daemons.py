"""A cross-class miss bisected to one step on real daemons.

A requester, a sentry whose determinism class differs from the worker's (``verify.det_class``:
another CPU build, the same torch, so the same random generators) and a worker that skips one
step of a train task (``skipping_executor``): real PyTorch on the CPU in the sandbox. The
sentry's replay of the last segment misses its tolerance; there is no
sentry of the worker's class, so it bisects the segment with the worker's signed states
(probes over ``verify/probe``) down to one step, runs that step from the worker's own state,
and fails the worker on it, naming the step. Synchronised on what the daemons log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu.devices import CPU_CLASS
from node.verify.worker import determinism_class
from tests.daemons import Daemon, all_output, cli_env, idlegrid, peer_id
from tests.integration.test_verify_daemons import wait_all
from tests.integration.test_verify_resumed_daemons import TRAIN

pytest.importorskip("torch")

ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_MARKET_BID_WINDOW_MS="1000",
    IDLEGRID_MARKET_VOUCHER_INTERVAL_MS="500",
    IDLEGRID_VERIFY_COMMIT_WINDOW_MS="300",
    IDLEGRID_VERIFY_REVEAL_WINDOW_MS="300",
    IDLEGRID_VERIFY_VERDICT_TIMEOUT_MS="600000",  # the bisection's verdict ends the wait
    IDLEGRID_VERIFY_SAMPLE_SIZE="2",
)
# Another class on the same generators (a CPU, the same torch): bisected, random states compared
ANOTHER_CPU_CLASS = determinism_class(CPU_CLASS) + "|another-build"
JOB = """
name = "train-skipped"
kind = "train"
verification = "standard"

[runtime]
entry = "train.py"
steps = 16
segments = 2
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


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict[str, Daemon]]:
    daemons: dict[str, Daemon] = {}
    skipping = {"IDLEGRID_WORKER_EXECUTOR_WRAPPER": "tests.integration.skipping_executor",
                "IDLEGRID_WORKER_PRICE_WEI_PER_S": str(100 * 10**9)}  # fmt: skip
    try:
        assert idlegrid(tmp_path / "requester", "init", env=ENV).returncode == 0
        daemons["requester"] = Daemon(tmp_path / "requester", (), ENV).wait_started()
        status = json.loads(idlegrid(tmp_path / "requester", "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        for name, role, extra in (
            ("sentry", "sentry", {"IDLEGRID_VERIFY_DET_CLASS": ANOTHER_CPU_CLASS}),
            ("w-skip", "worker", skipping),
        ):
            assert idlegrid(tmp_path / name, "init", "--role", role, env=ENV).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, ENV | extra)
        daemons["sentry"].wait_started()
        daemons["w-skip"].wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


@pytest.mark.slow
def test_a_skipped_step_is_bisected_to_and_fails_the_worker(
    network: dict[str, Daemon], tmp_path: Path
) -> None:
    requester, sentry, worker = network["requester"], network["sentry"], network["w-skip"]
    ids = {name: peer_id(d.home) for name, d in network.items()}
    wait_all(requester, [("worker status", ids["w-skip"], "new=available"),
                         ("peer discovered", ids["sentry"])])  # fmt: skip
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "job.toml").write_text(JOB)
    (spec_dir / "train.py").write_text(TRAIN.replace("time.sleep(0.5)", "pass"))
    done = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]

    try:
        escalated = sentry.wait_for("escalated", timeout=120)
        assert "segments 1 (" in escalated, escalated
        sentry.wait_for("bisecting", timeout=30)
        verdict = sentry.wait_for("verdict", timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{all_output(network)}") from None
    assert f"worker={ids['w-skip']}" in verdict and "passed=False" in verdict, verdict
    assert "segment 1, step 16: one step from the worker's own state" in verdict, verdict
    assert worker.output().count("probe answered") == 3, "steps 12, 14, 15 of 8..16"
    rejected = requester.wait_for("verification", timeout=60)
    assert "outcome=rejected" in rejected, rejected
    view = json.loads(idlegrid(requester.home, "job", "status", job_id, "--json", env=ENV).stdout)
    first = view["attempts"][0]
    assert first["payable_wei"] == "0" and first["outcome"].startswith("failed verification")
    for daemon in network.values():
        assert "Traceback" not in daemon.output()
