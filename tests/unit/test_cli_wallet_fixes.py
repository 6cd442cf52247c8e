"""What a newcomer on a localnet was misled by in ``idlegrid wallet`` and ``settlement status``:
jobs counted by escrow state, a daemon job's empty escrow record, the pool's refusals, and a
worker whose earnings a sentry already paid out. No chain: the settlement is faked."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from node import cli_wallet
from node.chain.client import TxResult
from node.chain.errors import ChainReverted
from node.cli import cli
from node.cli_base import BadInput, job_arg
from node.cli_wallet import _claim_text, _settlement_text

ETH = 10**18
JOB = "00" * 15 + "2a"
LEAVE_AT = 1796473587  # 2026-12-05 12:26:27 UTC

VIEW: dict[str, Any] = {
    "settle": True, "backend": "embedded", "chain_id": 1, "contract": "0x" + "ab" * 20,
    "address": "0x" + "cd" * 20, "token": None, "balance_wei": str(ETH),
    "gas_balance_wei": str(ETH),
    "pool": {"balance": "0", "debited": "0", "leaving": "0", "leave_at": "0"},
    "stake": {"bonded": "0", "unbonding": "0", "unbond_at": "0"},
    "earned_wei": "0", "epochs": 0, "pending_txs": 0, "dry_run": False,
}  # fmt: skip


def jobs(**counts: int) -> dict[str, Any]:
    """``escrow`` as the requester's API gives it: per escrow state, how many jobs."""
    seen = {"funded_wei": "1000", "returned_wei": "0"}
    return {"jobs": {state: {"count": n, **seen} for state, n in counts.items()}}


def requester_line(view: dict[str, Any]) -> str:
    lines = [ln for ln in _settlement_text(view).splitlines() if ln.startswith("as requester")]
    assert len(lines) == 1
    return lines[0].removeprefix("as requester").strip()


def test_jobs_whose_money_came_back_are_not_in_escrow() -> None:
    nine_refunded = VIEW | {"escrow": jobs(returned=9), "disputes": {"disputes": {}}}
    assert requester_line(nine_refunded) == "0 jobs in escrow (9 returned), 0 disputes"
    busy = VIEW | {
        "escrow": jobs(funded=2, leaving=1, returned=9, new=1),
        "disputes": {"disputes": {"disputed": 1, "answered": 2, "voided": 1}},
    }
    assert requester_line(busy) == (
        "3 jobs in escrow (1 leaving, 9 returned, 1 not funded yet), 4 disputes (1 open)"
    )
    one = VIEW | {"escrow": jobs(funded=1), "disputes": {"disputes": {"found": 1}}}
    assert requester_line(one) == "1 job in escrow, 1 dispute (1 open)"


def test_a_node_that_is_no_requester_has_no_requester_line() -> None:
    assert "as requester" not in _settlement_text(VIEW)
    fresh = VIEW | {"escrow": {"jobs": {}}, "disputes": {"disputes": {}}}
    assert requester_line(fresh) == "0 jobs in escrow, 0 disputes"


def test_nothing_leaving_shows_no_leaving_date() -> None:
    withdrawn = VIEW | {
        "pool": {"balance": str(ETH), "debited": "0", "leaving": "0", "leave_at": str(LEAVE_AT)},
        "stake": {"bonded": "0", "unbonding": "0", "unbond_at": str(LEAVE_AT)},
    }
    text = _settlement_text(withdrawn)
    assert "leaving" not in text and "2026-12-05" not in text
    leaving = withdrawn | {
        "pool": withdrawn["pool"] | {"leaving": str(ETH)},
        "stake": withdrawn["stake"] | {"unbonding": str(ETH)},
    }
    text = _settlement_text(leaving)
    assert "pool     1 ETH, debited 0 ETH, 1 ETH leaving on 2026-12-05 12:26 UTC\n" in text
    assert "stake    0 ETH, 1 ETH leaving on 2026-12-05 12:26 UTC\n" in text


PAID_OUT = (
    "nothing to claim: already paid out (by an anchoring sentry's payout or an earlier claim)"
)


def test_a_claim_after_a_payout_says_it_was_paid() -> None:
    done = {"claimed": False, "reason": "claimable 0 wei", "claimable_wei": "0"}
    assert _claim_text(done) == PAID_OUT
    some = {"claimed": False, "reason": "claimable 5 wei", "claimable_wei": "5"}
    assert _claim_text(some) == "nothing claimed: claimable 5 wei", "under the threshold"
    none = {"claimed": False, "reason": "no final epoch names this worker yet"}
    assert _claim_text(none) == "nothing claimed: no final epoch names this worker yet"
    paid = {"claimed": True, "epoch": 3, "paid_wei": str(ETH), "cumulative_wei": str(ETH)}
    assert _claim_text(paid) == "claimed 1 ETH (epoch 3)"


def test_the_worker_line_says_when_the_chain_paid_without_a_claim() -> None:
    payee = {"tasks": 2, "vouched_wei": str(ETH), "last_claim": None, "arrears": []}
    text = _settlement_text(VIEW | {"payee": payee, "earned_wei": str(ETH)})
    assert (
        "last claim none by this node since it started; 1 ETH paid out on chain "
        "(by anchoring sentries' payouts or earlier claims)"
    ) in text
    assert "last claim none since the node started" in _settlement_text(VIEW | {"payee": payee})


class FakeSettlement:
    """What ``wallet job`` and ``wallet fund`` touch of a connected settlement."""

    token = None

    def __init__(self, requester: str = "0x" + "00" * 20) -> None:
        self.chain = SimpleNamespace(kind="embedded")
        self.requester = requester
        self.sent: list[tuple[str, int]] = []
        self.refusal: ChainReverted | None = None

    def job(self, job: bytes) -> dict[str, Any]:
        return {"requester": self.requester, "deadline": 0, "unlock_at": 0, "closed": False,
                "cap": 0, "deposited": 0, "balance": 0}  # fmt: skip

    def _tx(self, op: str, value: int) -> TxResult:
        self.sent.append((op, value))
        return TxResult(op, "0x" + "11" * 32, 21000, 7, 1)

    def fund(self, value: int) -> TxResult:
        return self._tx("fund", value)

    def leave_pool(self, value: int) -> TxResult:
        return self._tx("leavePool", value)

    def withdraw_pool(self) -> TxResult:
        if self.refusal is not None:
            raise self.refusal
        return self._tx("withdrawPool", 0)


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> FakeSettlement:
    fake = FakeSettlement()
    monkeypatch.setattr(cli_wallet, "connect", lambda *_: fake)
    return fake


def test_a_job_without_per_job_escrow_is_bad_input(chain: FakeSettlement) -> None:
    said = (f"no per-job escrow on chain for {JOB}: nothing was deposited under this id "
            "with `idlegrid wallet deposit` (a daemon's jobs are paid from the requester's "
            "pool instead: see idlegrid settlement status)")  # fmt: skip
    text = CliRunner().invoke(cli, ["wallet", "job", JOB])
    assert text.exit_code == 2 and said in text.stderr and "cap" not in text.output
    shown = CliRunner().invoke(cli, ["wallet", "job", JOB, "--json"])
    assert shown.exit_code == 2
    assert json.loads(shown.stdout) | {"error": ""} == {
        "requester": "0x" + "00" * 20, "deadline": "0", "unlock_at": "0", "closed": False,
        "cap": "0", "deposited": "0", "balance": "0", "error": "",
    }, "the record's fields stay"  # fmt: skip
    assert json.loads(shown.stdout)["error"] == said
    chain.requester = "0x" + "cd" * 20
    deposited = CliRunner().invoke(cli, ["wallet", "job", JOB])
    assert deposited.exit_code == 0 and "requester  0x" + "cd" * 20 in deposited.output


def test_withdrawing_the_pool_too_early_says_when(chain: FakeSettlement) -> None:
    chain.refusal = ChainReverted("withdrawPool", "WindowOpen", {"epoch": 0, "deadline": LEAVE_AT})
    early = CliRunner().invoke(cli, ["wallet", "fund", "--withdraw"])
    assert early.exit_code == 1
    assert "the pool is still leaving: withdraw after 2026-12-05 12:26:27 UTC" in early.stderr
    chain.refusal = ChainReverted("withdrawPool", "NotLeaving")
    nothing = CliRunner().invoke(cli, ["wallet", "fund", "--withdraw"])
    assert nothing.exit_code == 1 and "wallet fund AMOUNT --leave" in nothing.stderr
    chain.refusal = ChainReverted("withdrawPool", "Paused", {"by": 1})
    other = CliRunner().invoke(cli, ["wallet", "fund", "--withdraw"])
    assert other.exit_code == 1 and "withdrawPool reverted: Paused(by=1)" in other.stderr


def test_fund_takes_amount_except_to_withdraw(chain: FakeSettlement) -> None:
    def fund(*args: str) -> int:
        return CliRunner().invoke(cli, ["wallet", "fund", *args]).exit_code

    assert fund("--withdraw") == 0 and fund("0", "--withdraw") == 0, "old scripts gave a 0"
    assert fund("1eth", "--withdraw") == 2, "withdrawPool takes all: no part of it"
    assert fund() == 2 and fund("--leave") == 2
    assert fund("1eth") == 0 and fund("2eth", "--leave") == 0
    assert chain.sent == [
        ("withdrawPool", 0), ("withdrawPool", 0), ("fund", ETH), ("leavePool", 2 * ETH),
    ]  # fmt: skip


@pytest.mark.parametrize("short", ["0x1234", JOB[:12]])
def test_a_job_id_prefix_is_refused_not_padded_into_another_job(short: str) -> None:
    with pytest.raises(BadInput, match="give the whole id, 32 hex digits"):
        job_arg(short)
    assert job_arg(JOB) == bytes.fromhex(JOB).ljust(32, b"\0")
    assert job_arg("0x" + "ab" * 32) == b"\xab" * 32
