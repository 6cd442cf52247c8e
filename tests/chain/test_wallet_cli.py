"""``idlegrid wallet ...`` and ``idlegrid settlement txs`` as child processes: one node on its
embedded chain, rebuilt from the journal by every command (anvil: test_wallet_cli_anvil.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.chain.service import FAUCET_WEI
from tests.chain.conftest import ETH
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
    # chain.token = "test": another deployment (its own address), paying in the test token
    token = cli_env(IDLEGRID_CHAIN_TOKEN="test")
    coin_units = idlegrid(home, "wallet", "fund", "2eth", env=token)
    assert coin_units.returncode == 2 and "AMOUNT" in coin_units.stderr
    assert "base units" in coin_units.stderr, "a token's decimals vary: no eth units"
    ok(home, "wallet", "fund", str(2 * ETH), env=token)  # approve, then fund
    shown = as_json(home, "wallet", "balance", env=token)
    assert shown["token"] and shown["pool_wei"] == str(2 * ETH)  # type: ignore[index]
    assert shown["balance_wei"] == str(FAUCET_WEI - 2 * ETH)  # type: ignore[index]
    assert int(shown["gas_balance_wei"]) < FAUCET_WEI  # type: ignore[index]
