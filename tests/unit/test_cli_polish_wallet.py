"""``idlegrid wallet balance|stake|deposit`` and ``settlement epochs`` as text: dates, not unix
times; ``-`` for nothing; the contract; and a word when the money is the embedded test chain's."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from node import cli_wallet
from node.chain.client import TxResult
from node.cli import cli
from node.cli_wallet import _balance_text

NOT_REAL = "embedded test chain: not real money"
JAN_1 = 1767225600  # 2026-01-01 00:00 UTC

BALANCE: dict[str, Any] = {
    "address": "0x" + "cd" * 20, "chain_id": 131277322940537, "backend": "embedded",
    "contract": "0x" + "ab" * 20, "token": None, "balance_wei": "10000000000000000000000",
    "gas_balance_wei": "10000000000000000000000", "stake_bonded_wei": "0",
    "stake_unbonding_wei": "0", "unbond_at": 0, "pool_wei": "0", "pool_leaving_wei": "0",
}  # fmt: skip


def test_balance_names_the_contract_and_says_the_test_coin_is_not_money() -> None:
    text = _balance_text(BALANCE)
    assert f"contract   0x{'ab' * 20}\n" in text
    assert f"chain      131277322940537 ({NOT_REAL})\n" in text
    assert "unbonding  -\n" in text, "nothing unbonding: no amount until 1970"
    assert text.count("not real money") == 1


def test_balance_on_a_real_chain_dates_what_is_unbonding() -> None:
    text = _balance_text(
        BALANCE | {"backend": "rpc", "stake_unbonding_wei": "10" + "0" * 18, "unbond_at": JAN_1}
    )
    assert "unbonding  10 ETH until 2026-01-01 00:00 UTC\n" in text
    assert "chain      131277322940537 (rpc)\n" in text and "not real money" not in text


class FakeSettlement:
    """What ``stake`` and ``deposit`` touch of a connected settlement."""

    token = None

    def __init__(self, kind: str) -> None:
        self.chain = SimpleNamespace(kind=kind, now=lambda: JAN_1)

    def stake(self, value: int) -> TxResult:
        return TxResult("stake", "0x" + "11" * 32, 21000, 7, 1)

    def deposit(self, job: bytes, value: int, cap: int, deadline: int) -> TxResult:
        return TxResult("deposit", "0x" + "22" * 32, 50000, 8, 2)


@pytest.mark.parametrize(
    "args", [("stake", "1eth"), ("deposit", "00" * 15 + "2a", "1eth")], ids=["stake", "deposit"]
)
def test_writes_on_the_embedded_chain_say_it_once(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    kind = {"kind": "embedded"}
    monkeypatch.setattr(cli_wallet, "connect", lambda *_: FakeSettlement(kind["kind"]))
    text = CliRunner().invoke(cli, ["wallet", *args]).output
    assert f"{args[0]}: mined in block" in text and text.count(NOT_REAL) == 1
    shown = json.loads(CliRunner().invoke(cli, ["wallet", *args, "--json"]).output)
    assert shown["op"] == args[0], "--json stays bare JSON"
    kind["kind"] = "rpc"
    assert "not real money" not in CliRunner().invoke(cli, ["wallet", *args]).output


@pytest.mark.parametrize(
    "args",
    [("stake", "0"), ("deposit", "00" * 15 + "2a", "0eth"), ("fund", "0"), ("unstake", "0")],
)
def test_an_amount_of_nothing_is_refused_before_any_gas_is_paid(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setattr(cli_wallet, "connect", lambda *_: FakeSettlement("embedded"))
    result = CliRunner().invoke(cli, ["wallet", *args])
    assert result.exit_code == 2 and "AMOUNT:" in result.output, result.output
    assert "moves nothing" in result.output


def epoch(n: int, state: str, deadline: int | None) -> dict[str, Any]:
    return {"epoch": n, "state": state, "anchorer": "0x" + "ee" * 20,
            "earnings_root": "0x" + "aa" * 32, "entries_root": "0x" + "bb" * 32,
            "total_wei": "400000000000", "tx": "0x" + "cc" * 32, "block": 9, "disputes": 0,
            "sum_disputes": {}, "dispute_deadline": deadline}  # fmt: skip


def test_epochs_show_window_ends_as_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [epoch(1, "final", None), epoch(2, "pending", JAN_1)]
    now = {"s": JAN_1 - 200}
    chain = SimpleNamespace(kind="embedded", now=lambda: now["s"])
    monkeypatch.setattr(cli_wallet, "connect", lambda *_: SimpleNamespace(chain=chain))
    monkeypatch.setattr(cli_wallet, "epoch_rows", lambda _: rows)
    lines = CliRunner().invoke(cli, ["settlement", "epochs"]).output.splitlines()
    assert lines[1].split()[:5] == ["1", "final", "0.0000004", "ETH", "0"]
    assert lines[1].split()[5] == "-", "no window: a dash, not None"
    assert "2026-01-01 00:00 UTC  0xaaaa" in lines[2] and "ended" not in lines[2]
    now["s"] = JAN_1
    ended = CliRunner().invoke(cli, ["settlement", "epochs"]).output
    assert "2026-01-01 00:00 UTC (ended)" in ended
    shown = json.loads(CliRunner().invoke(cli, ["settlement", "epochs", "--json"]).output)
    assert [r["dispute_deadline"] for r in shown] == [None, JAN_1], "--json keeps the raw time"
