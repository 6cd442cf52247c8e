"""``idlegrid localnet`` as a newcomer runs it: start a requester, two workers and a sentry on
one chain (anvil, and the embedded EVM behind JSON-RPC), wait until every node sees the others,
run a job through the requester, stop, and find no process left.

Synchronised by polling ``localnet status`` within a deadline, never by sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from node.chain import artifacts
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.errors import ChainReverted
from node.localnet import net
from node.localnet.chain import anvil_binary, deploy, start_chain
from node.localnet.procs import spawn, stop_all, wait_until
from node.localnet.state import ChainInfo, NodeInfo, Proc, State
from tests.daemons import REPO, Daemon, cli_env

ETH = 10**18
NAMES = {"requester-1", "worker-1", "worker-2", "sentry-1"}
MESH_TIMEOUT_S = 40.0

JOB = """
name = "answer"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = 2

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "150 gwei"   # worker-1 asks 100 gwei/s, worker-2 200: worker-1 must win
deadline = "2m"
"""

WORK = """
import pathlib
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/answer.txt").write_text("42\\n")
print("done", flush=True)
"""


def idlegrid(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args], cwd=REPO, env=cli_env(), text=True,
        capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
    )  # fmt: skip


def cli_status(root: Path) -> dict[str, Any]:
    return dict(json.loads(idlegrid("localnet", "status", "--dir", str(root), "--json").stdout))


def wait_for_mesh(root: Path) -> dict[str, Any]:
    """Polls status until every node is connected to every other (bounded, no fixed sleep).

    In this process (what `localnet status --json` prints, without a CLI start-up per poll).
    """
    deadline = time.monotonic() + MESH_TIMEOUT_S
    while True:
        doc = net.status(net.require(root))
        if all(set(n["connected"] or ()) == NAMES - {n["name"]} for n in doc["nodes"]):
            return doc
        assert time.monotonic() < deadline, f"no full mesh within {MESH_TIMEOUT_S} s: {doc}"


def left_behind(root: Path) -> list[str]:
    """Processes whose command line mentions the localnet's dir (daemons, workloads)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if str(root) in cmd and p.pid != os.getpid():
            found.append(f"{p.pid}: {cmd}")
    return found


@pytest.mark.parametrize("chain", ["anvil", "embedded"])
def test_localnet_runs_a_job_and_stops_clean(tmp_path: Path, chain: str) -> None:
    if chain == "anvil" and anvil_binary() is None:
        pytest.skip("anvil not installed: run `npm install` in contracts/ (@foundry-rs/anvil)")
    root = tmp_path / "ln"
    start = ("localnet", "start", "--dir", str(root), "--workers", "2", "--chain", chain)
    started, by_hand = idlegrid(*start, "--json"), None
    try:
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["chain"]["kind"] == chain
        doc = wait_for_mesh(root)
        check_chain(doc)
        run_job(root, tmp_path, doc)
        if chain == "anvil":  # the same code in both modes; each CLI call costs a second or two
            assert cli_status(root)["running"] is True
            again = idlegrid(*start)
            assert again.returncode == 1
            assert "already running" in again.stderr
            logs = idlegrid("localnet", "logs", "worker-1", "--dir", str(root))
            assert "node started" in logs.stdout
            by_hand = restart_by_hand(root, doc, "worker-2")
    finally:
        stopped = idlegrid("localnet", "stop", "--dir", str(root), "--json")
        if by_hand is not None:  # stopped by localnet stop, above; reaped here
            assert by_hand.proc.wait(timeout=10) is not None
    assert stopped.returncode == 0, stopped.stderr
    assert set(json.loads(stopped.stdout)["processes"].values()) == {"stopped"}
    assert left_behind(root) == []
    assert net.status(net.require(root))["stale"] is True
    if chain == "anvil":
        after = idlegrid("localnet", "status", "--dir", str(root), "--json")
        assert after.returncode == 1, "status exits 1 when the localnet is not running"


def restart_by_hand(root: Path, doc: dict[str, Any], name: str) -> Daemon:
    """An operator restarts a node to change a setting: ``node stop``, then ``node start``
    in its home. The localnet still counts it (it used to say DEGRADED, and leave it running
    at ``localnet stop``)."""
    home = Path(next(n for n in doc["nodes"] if n["name"] == name)["home"])
    assert idlegrid("node", "stop", "--home", str(home)).returncode == 0
    by_hand = Daemon(home).wait_started()
    row = next(n for n in cli_status(root)["nodes"] if n["name"] == name)
    assert (row["alive"], row["pid"]) == (True, by_hand.proc.pid)
    return by_hand


def check_chain(doc: dict[str, Any]) -> None:
    """One chain for all: every wallet funded, workers and sentries staked, and a node's own
    config (``idlegrid wallet balance --home``) reaching the same contract."""
    chain = doc["chain"]
    assert isinstance(chain["block"], int) and chain["block"] > 0
    reader = Settlement(
        Chain.rpc(chain["url"], chain["chain_id"]), artifacts.load(), chain["contract"],
        bytes(Account.create().key),
    )  # fmt: skip
    for node in doc["nodes"]:
        assert int(node["balance_wei"]) > 900 * ETH, node
        staked = 0 if node["role"] == "requester" else 10 * ETH
        assert reader.stake_of(node["address"])["bonded"] == staked, node["name"]
    sentry = next(n for n in doc["nodes"] if n["role"] == "sentry")
    done = idlegrid("wallet", "balance", "--home", sentry["home"], "--json")
    assert done.returncode == 0, done.stderr
    wallet = json.loads(done.stdout)
    assert (wallet["contract"], wallet["address"]) == (chain["contract"], sentry["address"])
    assert int(wallet["stake_bonded_wei"]) == 10 * ETH


def run_job(root: Path, tmp_path: Path, doc: dict[str, Any]) -> None:
    requester = next(n for n in doc["nodes"] if n["role"] == "requester")
    spec = tmp_path / "job"
    spec.mkdir()
    (spec / "job.toml").write_text(JOB)
    (spec / "work.py").write_text(WORK)
    done = idlegrid("job", "submit", str(spec / "job.toml"), "--wait", "--json",
                    "--home", requester["home"], timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "verified", job
    winner = next(n for n in doc["nodes"] if n["name"] == "worker-1")
    assert job["attempts"][0]["worker"] == winner["peer_id"], "the cheaper worker wins"


# The state file alone: stale detection and refusal, without daemons.


def fake_state(root: Path, proc: Proc) -> State:
    root.mkdir(parents=True, exist_ok=True)
    node = NodeInfo("worker-1", "worker", str(root / "nodes" / "worker-1"), 4001, "p", "0x", 1)
    state = State(str(root), ChainInfo("anvil", "http://127.0.0.1:1", proc=Proc()), [node])
    node.proc = proc
    state.save()
    return state


def test_a_stale_state_is_cleared_and_a_live_one_refused(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake_state(tmp_path / "stale", Proc(dead.pid, 1.0))
    assert "stale" in str(net.check_free(tmp_path / "stale"))
    assert not (tmp_path / "stale" / "localnet.json").exists()
    fake_state(tmp_path / "live", Proc.of(os.getpid()))
    with pytest.raises(net.LocalnetError, match=r"already running.*worker-1"):
        net.check_free(tmp_path / "live")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "localnet.json").write_text("{not json")
    with pytest.raises(net.LocalnetError, match="unreadable localnet state"):
        net.check_free(tmp_path / "bad")


def test_a_reused_pid_is_not_our_process() -> None:
    me = Proc.of(os.getpid())
    assert me.alive()
    assert not Proc(me.pid, me.create_time - 100).alive()
    assert Proc(me.pid, me.create_time - 1).alive()  # the boot time moved a second: still ours


def test_embedded_chain_server_speaks_json_rpc(tmp_path: Path) -> None:
    info = start_chain(tmp_path, "embedded")
    try:
        w3 = Web3(HTTPProvider(info.url))
        raw = w3.provider.make_request("eth_chainId", [])  # type: ignore[arg-type]
        assert raw["result"] == hex(info.chain_id), "quantities are hex, as JSON-RPC says"
        who = "0x" + "11" * 20
        w3.provider.make_request("anvil_setBalance", [who, hex(5 * ETH)])  # type: ignore[arg-type]
        assert w3.eth.get_balance(Web3.to_checksum_address(who)) == 5 * ETH
        bad = w3.provider.make_request("eth_noSuchMethod", [])  # type: ignore[arg-type]
        assert "error" in bad
        assert w3.eth.block_number >= 1, "the server still answers after a bad request"
        info.contract = deploy(info)
        chain, key = Chain.rpc(info.url, info.chain_id), bytes(Account.create().key)
        chain.fund(Account.from_key(key).address, ETH)
        client = Settlement(chain, artifacts.load(), info.contract, key)
        with pytest.raises(ChainReverted, match=r"InsufficientStake\(bonded=0"):
            client.request_unstake(ETH)  # reverts as on anvil: code 3 with the revert data
        before = chain.now()
        chain.advance(3600)  # evm_increaseTime + evm_mine, as on anvil
        assert 3600 <= chain.now() - before <= 3602  # a block may be mined in between
        block, deadline = w3.eth.block_number, time.monotonic() + 10
        while w3.eth.block_number == block:  # blocks come every second without transactions
            assert time.monotonic() < deadline, "no block mined in 10 s: dispute windows stall"
            time.sleep(0.2)
        assert chain.now() >= before + 3600, "the ticker keeps the travelled time"
    finally:
        assert stop_all([("chain", info.proc)]) == {"chain": "stopped"}
    assert not info.proc.alive()


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def test_stop_kills_a_straggler_and_what_it_started(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = spawn([sys.executable, "-c", STUBBORN], log, dict(os.environ))
    child_pid = wait_until(lambda: log.read_text().strip() or None, proc, log, 30, "stubborn")
    child = Proc.of(int(child_pid))
    assert stop_all([("stubborn", proc)], timeout_s=0.5) == {"stubborn": "killed"}
    assert not proc.alive()
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously: bounded poll
    while child.alive():
        assert time.monotonic() < deadline, "the straggler's child survived its group's SIGKILL"
