"""``idlegrid wallet dispute``: what it asks the daemon, how it shows the answer, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.client import ApiClient

WORKER = "0x" + "ab" * 20
ANSWER = {
    "epoch": 4, "dry_run": False,
    "disputes": [{
        "job": "0x" + "2a" * 16 + "00" * 16, "task": "0x" + "00" * 27 + "0300000001",
        "worker": WORKER, "amount_wei": str(3 * 10**18), "reason": "above signed",
        "detail": "3000000000000000000 wei on ...: we signed at most 1000000000000000000",
        "answerable": False, "state": "disputed", "answer_by": 1_900_000_000, "error": "",
    }],
}  # fmt: skip


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["wallet", "dispute", *args, "--home", str(tmp_path)])
    return result.exit_code, result.output


def test_asks_the_daemon_and_shows_what_was_disputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, Any]] = []

    def post(self: ApiClient, path: str, body: Any = None) -> Any:
        asked.append((path, body))
        return ANSWER

    monkeypatch.setattr(ApiClient, "post", post)
    code, out = invoke(tmp_path, "4", "--job", "2a" * 16, "--worker", WORKER, "--task", "3#1")
    assert code == 0, out
    assert asked == [("/v1/chain/dispute", {
        "epoch": 4, "job": "0x" + "2a" * 16 + "00" * 16, "worker": WORKER,
        "task": "0x" + "00" * 27 + "0300000001", "dry_run": False,
    })]  # fmt: skip
    assert "3#1" in out and "3 ETH" in out and "above signed" in out and "disputed" in out
    code, out = invoke(tmp_path, "4", "--job", "2a" * 16, "--worker", WORKER, "--json")
    assert json.loads(out) == ANSWER and asked[-1][1]["task"] is None


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("4", "--job", "zz", "--worker", WORKER), "--job: "),
        (("4", "--job", "2a" * 16, "--worker", "0x12"), "--worker"),
        (("4", "--job", "2a" * 16, "--worker", WORKER, "--task", "x#1"), "--task: "),
        (("-1", "--job", "2a" * 16, "--worker", WORKER), "EPOCH"),
    ],
)
def test_bad_input_exits_2_naming_it(tmp_path: Path, args: tuple[str, ...], names: str) -> None:
    code, out = invoke(tmp_path, *args)
    assert code == 2 and names in out, out


def test_without_a_running_daemon_it_says_so(tmp_path: Path) -> None:
    code, out = invoke(tmp_path, "4", "--job", "2a" * 16, "--worker", WORKER)
    assert code == 1 and "no idlegrid daemon is running" in out, out
