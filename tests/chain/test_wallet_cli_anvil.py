"""``idlegrid wallet ...`` as child processes: a requester and a worker settling through anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.settlement.eip712 import split_fee
from node.chain.backend import Chain
from tests.chain.conftest import ETH, Anvil, make_net
from tests.chain.test_wallet_cli import JOB, address_of, as_json, ok
from tests.daemons import cli_env, idlegrid


@pytest.mark.slow
def test_requester_and_worker_settle_through_anvil(anvil: Anvil, tmp_path: Path) -> None:
    net = make_net(Chain.rpc(anvil.url, 31337))
    env = cli_env(
        IDLEGRID_CHAIN_BACKEND="rpc", IDLEGRID_CHAIN_RPC_URL=anvil.url,
        IDLEGRID_CHAIN_CHAIN_ID="31337", IDLEGRID_CHAIN_CONTRACT=net.address,
    )  # fmt: skip
    req, wrk = tmp_path / "requester", tmp_path / "worker"
    addr = {}
    for home in (req, wrk):
        ok(home, "init", env=env)
        addr[home] = address_of(home)
        net.chain.fund(addr[home], 10 * ETH)
    ok(req, "wallet", "deposit", JOB, "3eth", "--deadline-s", "600", env=env)
    voucher = ok(req, "wallet", "voucher", JOB, "1#2", addr[wrk], "2eth", env=env)
    before = net.chain.balance(addr[wrk])
    tx = as_json(wrk, "wallet", "claim", voucher, env=env)
    gas_price = net.chain.w3.eth.get_transaction_receipt(tx["tx"])["effectiveGasPrice"]  # type: ignore[index]
    paid = split_fee(2 * ETH, 100)[0]
    assert net.chain.balance(addr[wrk]) == before + paid - tx["gas"] * gas_price  # type: ignore[index]
    forged = json.loads(voucher) | {"cumulative": str(3 * ETH)}
    bad = idlegrid(wrk, "wallet", "claim", json.dumps(forged), env=env)
    assert bad.returncode == 1 and "signed by" in bad.stderr
    ok(req, "wallet", "end", JOB, env=env)
    net.chain.advance(3601)
    ok(req, "wallet", "withdraw", JOB, env=env)
    assert net.chain.balance(net.address) == ETH // 50  # only the protocol fee is left
    job = net.client("other").job(bytes.fromhex(JOB).ljust(32, b"\0"))
    assert job["closed"] is True and job["balance"] == 0 and job["requester"] == addr[req]
