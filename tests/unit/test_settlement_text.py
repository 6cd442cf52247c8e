"""``idlegrid settlement status`` for a reader: amounts in ETH, dates, one line per part."""

from __future__ import annotations

from typing import Any

from node.cli_wallet import _settlement_text

VIEW: dict[str, Any] = {
    "settle": True, "backend": "rpc", "chain_id": 421614, "contract": "0x" + "ab" * 20,
    "address": "0x" + "cd" * 20, "token": None, "balance_wei": "1500000000000000000",
    "gas_balance_wei": "1500000000000000000",
    "pool": {"balance": "2000000000000000", "debited": "0", "leaving": "1000000000000000",
             "leave_at": "1767225600"},
    "stake": {"bonded": "0", "unbonding": "0", "unbond_at": "0"},
    "earned_wei": "250000000", "epochs": 3, "pending_txs": 1, "dry_run": False,
    "escrow": {"jobs": {"j1": {}}}, "disputes": {"disputes": {}},
    "payee": {"tasks": 2, "vouched_wei": "250000000", "final_epoch": 2,
              "last_claim": {"claimed": True, "epoch": 2, "paid_wei": "250000000"},
              "arrears": [{"requester": "0x" + "ee" * 20, "peers": [], "waiting_wei": "5000",
                           "anchors": 3}]},
}  # fmt: skip


def test_amounts_dates_and_roles_read_as_sentences() -> None:
    text = _settlement_text(VIEW)
    assert "balance       1.5 ETH\n" in text
    assert (
        "pool          0.002 ETH, debited 0 ETH, 0.001 ETH leaving on 2026-01-01 00:00 UTC" in text
    )
    assert "stake         0 ETH\n" in text, "nothing unbonding: no date"
    assert "earned        0.00000000025 ETH over 3 epoch(s)" in text
    assert "last claim 0.00000000025 ETH at epoch 2" in text
    assert f"requester 0x{'ee' * 20} owes 0.000000000000005 ETH unpaid over 3 anchors" in text
    assert "as requester  0 jobs in escrow, 0 disputes" in text
    assert "{" not in text, "no raw JSON"


def test_the_embedded_chain_says_its_coin_is_a_test_coin() -> None:
    text = _settlement_text(VIEW | {"backend": "embedded", "payee": None})
    assert "balance       1.5 ETH (test coin)" in text and "as worker" not in text
    assert _settlement_text({"settle": False}).startswith("this node does not settle")


def test_an_anchorer_that_halted_says_so() -> None:
    running = {"state": "idle", "posted_here": 4, "stopped_at_epoch": None}
    assert (
        "as anchorer   4 epoch(s) posted here, idle\n"
        in _settlement_text(VIEW | {"anchorer": running}) + "\n"
    )
    stopped = _settlement_text(VIEW | {"anchorer": running | {"stopped_at_epoch": 7}})
    assert "HALTED: epoch 7 on chain could not be rebuilt here" in stopped
