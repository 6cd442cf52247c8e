"""``idlegrid wallet ...`` and ``idlegrid settlement txs`` as child processes on real chains:
one node on its embedded chain, then a requester and a worker settling through anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.settlement.eip712 import split_fee
from node.chain.backend import Chain
from tests.chain.conftest import ETH, Anvil, make_net
from tests.daemons import cli_env, idlegrid

JOB = "00" * 15 + "2a"  # a 16-byte market job id


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = idlegrid(home, *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def address_of(home: Path) -> str:
    return str(json.loads((home / "identity.json").read_text())["address"])


def as_json(home: Path, *args: str, env: dict[str, str] | None = None) -> object:
    return json.loads(ok(home, *args, "--json", env=env))


@pytest.mark.slow
def test_one_node_on_its_embedded_chain(tmp_path: Path) -> None:
    home = tmp_path / "n"
    ok(home, "init")
    me = address_of(home)
    tx = as_json(home, "wallet", "deposit", JOB, "1eth", "--cap", "2eth")
    assert tx["op"] == "deposit" and tx["gas"] > 0  # type: ignore[index]
    bad = idlegrid(home, "wallet", "deposit", JOB, "1.5")
    assert bad.returncode == 2 and "finer than one wei" in bad.stderr
    refused = idlegrid(home, "wallet", "deposit", JOB, "5eth")
    assert refused.returncode == 1 and "OverCap(" in refused.stderr
    ok(home, "wallet", "fund", "2eth")
    assert as_json(home, "wallet", "balance")["pool_wei"] == str(2 * ETH)  # type: ignore[index]
    dry = as_json(home, "wallet", "stake", "1eth", "--dry-run")
    assert dry["dry_run"] is True and dry["tx"] is None  # type: ignore[index]
    voucher = ok(home, "wallet", "voucher", JOB, "0#0", me, "0.25eth")
    ok(home, "wallet", "claim", voucher)
    rows = as_json(home, "settlement", "txs")
    assert [(r["op"], r["state"]) for r in rows] == [  # type: ignore[union-attr]
        ("deposit", "mined"), ("deposit", "reverted"), ("fund", "mined"), ("claim", "mined"),
    ]  # fmt: skip
    # every command rebuilt the chain from the journal: the escrow is what was left
    assert as_json(home, "wallet", "job", JOB)["balance"] == str(ETH - ETH // 4)  # type: ignore[index]


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
