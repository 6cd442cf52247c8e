"""Settlement through real daemons over anvil: a sentry, a requester and a worker.

The requester funds the job's budget into its pool and signs the EIP-712 twin of every voucher;
the worker checks and keeps them and gossips the last one when the task ends; the sentry
anchors an epoch, lets the (short) dispute window pass, finalizes it and gossips the leaves;
pays the worker out (one batched `payout`, so the worker spends no gas on claims); the
requester takes back what the job did not spend.
Every balance is then checked to the wei, gas included. Synchronised on log lines.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from consensus.settlement.eip712 import BPS
from node.chain import artifacts
from node.chain.backend import Chain, DeployParams
from node.chain.client import Settlement
from node.client import ApiClient
from node.home import Home
from tests.chain.conftest import ETH, Anvil, anvil_binary, free_port
from tests.daemons import Daemon, cli_env, idlegrid, peer_id
from tests.integration.test_market_daemons import wait_for_fields

FEE_BPS = 100
KEY = bytes(range(1, 33))  # reads only
JOB = """
name = "paid-count"
kind = "exec"
verification = "none"

[runtime]
command = ["python3", "work.py"]
estimate_s = 3

[requirements]
gpu_count = 1

[io]
inputs = ["work.py"]
outputs = ["out/"]

[budget]
max_total = "0.001 eth"
max_price_per_s = "100 gwei"
deadline = "5m"
"""
WORK = """
import pathlib, time
time.sleep(2)  # a few vouchers' worth
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/answer.txt").write_text("42\\n")
"""


@pytest.fixture
def chain() -> Iterator[tuple[Anvil, Chain, str]]:
    binary = anvil_binary()
    if binary is None:
        pytest.skip("anvil not installed: run `npm install` in contracts/")
    node = Anvil(binary, args=("--block-time", "1"))  # chain time moves between transactions
    node.start()
    try:
        c = Chain.rpc(node.url, 31337)
        deployer = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
        params = DeployParams(
            treasury="0x000000000000000000000000000000000000bEEF", fee_bps=FEE_BPS,
            unbonding_delay_s=2, anchor_bond_wei=ETH, dispute_window_s=3,
        )  # fmt: skip
        yield node, c, c.deploy(artifacts.load(), params, deployer)
    finally:
        node.stop()


def gas_paid(home: Path, c: Chain) -> int:
    """Wei this node spent on gas: every mined transaction in its journal."""
    with sqlite3.connect(home / "node.db") as db:
        hashes = [r[0] for r in db.execute("SELECT tx_hash FROM chain_txs WHERE state='mined'")]
    total = 0
    for tx in hashes:
        receipt = c.w3.eth.get_transaction_receipt(tx)
        total += int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    return total


def anchored(reader: Settlement) -> list[int]:
    """What each anchor debited, in order."""
    return [
        int(e["args"]["total"]) for e in reader.contract.events.Anchored().get_logs(from_block=0)
    ]


def vouched(home: Path) -> int:
    with sqlite3.connect(home / "node.db") as db:
        return sum(int(r[0]) for r in db.execute("SELECT amount_wei FROM settle_vouchers"))


@pytest.mark.slow
def test_a_job_is_paid_through_an_anchored_epoch(
    chain: tuple[Anvil, Chain, str], tmp_path: Path
) -> None:
    node, c, contract = chain
    env = cli_env(
        IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1", IDLEGRID_P2P_OFFLINE_AFTER_S="4",
        IDLEGRID_MARKET_BID_WINDOW_MS="1000", IDLEGRID_MARKET_VOUCHER_INTERVAL_MS="500",
        IDLEGRID_CHAIN_BACKEND="rpc", IDLEGRID_CHAIN_RPC_URL=node.url,
        IDLEGRID_CHAIN_CHAIN_ID="31337", IDLEGRID_CHAIN_CONTRACT=contract,
        IDLEGRID_CHAIN_SETTLE="1", IDLEGRID_CHAIN_EPOCH_S="2", IDLEGRID_CHAIN_POLL_S="1",
        IDLEGRID_CHAIN_CLAIM_THRESHOLD_WEI="1", IDLEGRID_CHAIN_PAYOUT_MIN_WEI="1",
        IDLEGRID_WORKER_PRICE_WEI_PER_S=str(50 * 10**9),
    )  # fmt: skip
    homes = {role: tmp_path / role for role in ("sentry", "requester", "worker")}
    address = {}
    with ThreadPoolExecutor() as pool:  # three CLI starts at once
        inits = pool.map(lambda r: idlegrid(homes[r], "init", "--role", r, env=env), homes)
        assert all(done.returncode == 0 for done in inits)
    for role, home in homes.items():
        address[role] = json.loads((home / "identity.json").read_text())["address"]
        c.fund(address[role], 10 * ETH)
    before = {role: c.balance(a) for role, a in address.items()}
    for role in ("sentry", "worker"):  # the anchor bond; the stake the requester asks for
        staked = idlegrid(homes[role], "wallet", "stake", "1eth", env=env)
        assert staked.returncode == 0, staked.stderr
    daemons: dict[str, Daemon] = {}
    listen = {role: f"/ip4/127.0.0.1/tcp/{free_port()}" for role in homes}
    at = {role: f"{listen[role]}/p2p/{peer_id(homes[role])}" for role in homes}
    try:  # all three start at once: the others find the sentry at its fixed port
        daemons["sentry"] = Daemon(homes["sentry"], ("--listen", listen["sentry"]), env)
        for role in ("requester", "worker"):
            daemons[role] = Daemon(homes[role], ("--listen", listen[role],
                                                 "--bootstrap", at["sentry"]), env)  # fmt: skip
        for d in daemons.values():
            d.wait_started()
        restart = ("--listen", listen["sentry"], "--bootstrap", at["requester"],
                   "--bootstrap", at["worker"])  # fmt: skip
        run_job(daemons, tmp_path, env, restart, Settlement(c, artifacts.load(), contract, KEY))
        for d in daemons.values():
            assert "Traceback" not in d.output()
    finally:
        for d in daemons.values():
            d.kill()
    check_balances(c, contract, homes, address, before)


def run_job(
    daemons: dict[str, Daemon], tmp_path: Path, env: dict[str, str], restart: tuple[str, ...],
    reader: Settlement,
) -> None:  # fmt: skip
    requester, worker, sentry = daemons["requester"], daemons["worker"], daemons["sentry"]
    ready = ("worker status", f"peer={peer_id(worker.home)}", "new=available")
    if not any(all(w in line for w in ready) for line in requester.lines):  # seen before start?
        wait_for_fields(requester, "worker status", peer=peer_id(worker.home), new="available")
    spec = tmp_path / "job"
    spec.mkdir()
    (spec / "job.toml").write_text(JOB)
    (spec / "work.py").write_text(WORK)
    done = idlegrid(requester.home, "job", "submit", str(spec / "job.toml"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    requester.wait_for("escrow funded", timeout=30)
    sentry.wait_for("epoch anchored", timeout=60)
    sentry.kill()  # kill -9 while the epoch is pending: the restart must not anchor it again
    daemons["sentry"] = sentry = Daemon(sentry.home, restart, env).wait_started()
    assert "anchoring resumed" in sentry.output()  # state=pending, or posting if killed early
    requester.wait_for("escrow returned", timeout=60)  # the job is over: no more vouchers
    gross = vouched(worker.home)
    paid_to = json.loads((worker.home / "identity.json").read_text())["address"]
    # The sentry pays the worker out as each epoch goes final (the worker sends no claim); the
    # last voucher comes with the final report, so it may be anchored in a second epoch.
    while reader.earned_of(paid_to) != gross - sum(t * FEE_BPS // BPS for t in anchored(reader)):
        sentry.wait_for("earnings paid out", timeout=60)
    chain_view = ApiClient(Home(worker.home)).get("/v1/chain")  # `idlegrid settlement status`
    assert chain_view["settle"] is True and int(chain_view["earned_wei"]) > 0
    assert chain_view["payee"]["last_claim"] is None, "paid out before it heard the leaves"
    assert chain_view["payee"]["arrears"] == [], "the requester was anchored: not in arrears"
    assert "anchoring not checked" not in worker.output()  # the arrears watch reads the chain
    # Whatever entries the requester heard (the sentry is killed as it posts, and the window is
    # 3 s), it found them signed: nothing disputed.
    assert "to dispute" not in requester.output()
    assert ApiClient(Home(requester.home)).get("/v1/chain")["disputes"]["disputes"] == {}


def check_balances(
    c: Chain, contract: str, homes: dict[str, Path], address: dict[str, str],
    before: dict[str, int],
) -> None:  # fmt: skip
    gross = vouched(homes["worker"])
    reader = Settlement(c, artifacts.load(), contract, KEY)
    totals = anchored(reader)
    assert gross > 0 and sum(totals) == gross, "every voucher kept was anchored"
    fee = sum(t * FEE_BPS // BPS for t in totals)  # taken per epoch, rounded down
    assert reader.earned_of(address["worker"]) == gross - fee
    pool = reader.pool_of(address["requester"])
    assert (pool["balance"], pool["leaving"]) == (0, 0), "all spent or given back"
    gas = {role: gas_paid(home, c) for role, home in homes.items()}
    staked = ETH  # each of the worker and the sentry
    assert c.balance(address["worker"]) == before["worker"] + gross - fee - gas["worker"] - staked
    assert c.balance(address["requester"]) == before["requester"] - gross - gas["requester"]
    with sqlite3.connect(homes["requester"] / "node.db") as db:
        ops = {r[0] for r in db.execute("SELECT op FROM chain_txs")}
    assert not ops & {"dispute", "voidAnchor"}, "a correct epoch is not disputed"
    assert c.balance(address["sentry"]) == before["sentry"] - staked - gas["sentry"]
    assert reader.fees_accrued() == fee
    assert c.balance(contract) == fee + 2 * staked  # the protocol fee and the stakes remain
    roots = [
        e["args"]["entriesRoot"] for e in reader.contract.events.Anchored().get_logs(from_block=0)
    ]
    assert len(roots) == len(set(roots)) >= 1, "each epoch anchored once, the crash included"
