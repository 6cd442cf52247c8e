"""Rough edges of the job CLI a newcomer met: failover shown in text, specs that cannot
succeed warned about, a repeated cancel, a multi-task guarantee read as the job's."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consensus.market.spec import parse_spec
from consensus.market.spec_warnings import spec_warnings
from node import cli_job
from node.cli import cli
from node.cli_base import short_peer
from node.home import HomeError
from tests.unit.test_cli_job import Scripted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEAD, ALIVE = "12D3KooWc2zgDeadWorker", "12D3KooWHsSiLiveWorker"
UNREACHABLE = "unreachable for 4638 ms: cannot reach 12D3KooWc2zg"
GUARANTEE = "render: 4 of 4 segments re-executed, P(detect 25 % faked) >= 68 %"


def attempt(n: int, worker: str, outcome: str, vouched: str, payable: str | None) -> dict[str, Any]:
    return {"task": 0, "attempt": n, "worker": worker, "outcome": outcome,
            "vouched_wei": vouched, "payable_wei": payable}  # fmt: skip


def task(n: int, state: str, worker: str, tid: int = 0) -> dict[str, Any]:
    return {"task": tid, "state": state, "attempt": n, "worker": worker, "reason": "",
            "checkpoints": 0}  # fmt: skip


def view(
    tasks: list[dict[str, Any]], attempts: list[dict[str, Any]], **over: Any
) -> dict[str, Any]:
    return {"job_id": "ab" * 16, "kind": "exec", "state": "running", "reason": "",
            "deadline_ms": 0, "task_states": tasks, "attempts": attempts, "cost_wei": "0",
            "verification": {"level": "standard", "guarantee": GUARANTEE}} | over  # fmt: skip


FAILED_OVER = view(
    [task(1, "running", ALIVE)],
    [attempt(0, DEAD, UNREACHABLE, "600000000000", "0"), attempt(1, ALIVE, "", "0", None)],
)


def test_status_lists_each_earlier_attempt_that_did_not_end_done_with_what_was_paid() -> None:
    text = cli_job._human_job(FAILED_OVER)
    head, _, rest = text.partition("\nearlier attempts:\n")
    assert "TASK" in head and rest.startswith(
        f"  task 0#0 on {short_peer(DEAD)}: {UNREACHABLE}; "
        "paid 0 ETH of 0.0000006 ETH (600 gwei) vouched\ncost so far:"
    ), text
    assert "0#1" not in text, "the current attempt is the table's row"
    done = view([task(1, "running", ALIVE)], [attempt(0, DEAD, "done", "5", "5")])
    assert "earlier attempts" not in cli_job._human_job(done)
    assert "earlier attempts" not in cli_job._human_job(view([task(0, "running", DEAD)], []))


def test_an_earlier_attempts_outcome_is_one_tame_line() -> None:
    rude = attempt(0, DEAD, "boom\n\x1b[2J" + "x" * 400, "0", "0")
    line = cli_job._attempt_line(rude, None)
    assert (
        "\n" not in line
        and "\x1b" not in line
        and line.endswith("...; paid 0 ETH of 0 ETH vouched")
    )
    assert len(line) < 250
    assert cli_job._attempt_line(attempt(0, DEAD, "gone", "7", "3"), "0xtoken").endswith(
        "gone; paid 3 base units of 7 base units vouched"
    )


def test_wait_says_once_why_an_attempt_ended_before_the_next_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("node.cli_job.time.sleep", lambda _s: None)
    first = view([task(0, "running", DEAD)], [attempt(0, DEAD, "", "0", None)])
    moved = view([task(1, "awarded", ALIVE)], FAILED_OVER["attempts"])
    running = view([task(1, "running", ALIVE)], FAILED_OVER["attempts"])
    done = {**running, "state": "verified"}
    cli_job._follow(Scripted([first, moved, moved, running, done]), "ab" * 16, quiet=False)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    why = [i for i, line in enumerate(lines) if UNREACHABLE in line]
    assert len(why) == 1, lines
    assert (
        lines[why[0]].startswith("task 0#0 on ") and "paid 0 ETH of 0.0000006 ETH" in lines[why[0]]
    )
    awarded = next(i for i, line in enumerate(lines) if line.startswith("task 0: awarded"))
    assert why[0] < awarded, "the reason comes before the new worker"


def spec_of(text: str, **changes: str) -> Any:
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return parse_spec(tomllib.loads(text))


TRAIN = (EXAMPLES / "train-tiny" / "job.toml").read_text()  # estimate_s = 30, 1 task


def test_no_warning_for_a_spec_that_fits() -> None:
    assert spec_warnings(spec_of(TRAIN)) == []
    assert spec_warnings(spec_of((EXAMPLES / "exec-wordcount" / "job.toml").read_text())) == []


def test_a_deadline_shorter_than_the_estimate_is_warned_about() -> None:
    assert spec_warnings(spec_of(TRAIN, **{'deadline = "30m"': 'deadline = "5s"'})) == [
        "budget.deadline 5s is shorter than runtime.estimate_s 30 s: a worker will likely be "
        "stopped at the deadline"
    ]
    assert spec_warnings(spec_of(TRAIN, **{'deadline = "30m"': 'deadline = "30s"'})) == []


def test_a_budget_below_the_estimate_at_the_price_cap_is_warned_about() -> None:
    # 30 s x 100 gwei/s = 3000 gwei: one wei short, warned; exactly covered, not
    short = spec_of(TRAIN, **{'"0.0001 eth"': '"2999 gwei"', '"2000 gwei"': '"100 gwei"'})
    assert spec_warnings(short) == [
        "budget.max_total 2999 gwei is below runtime.estimate_s 30 s at budget.max_price_per_s "
        "100 gwei/s x 1 GPU(s) = 3000 gwei: a worker asking the maximum price will not bid"
    ]
    enough = spec_of(TRAIN, **{'"0.0001 eth"': '"3000 gwei"', '"2000 gwei"': '"100 gwei"'})
    assert spec_warnings(enough) == []


def test_a_multi_task_job_is_judged_per_task_as_its_demands_are() -> None:
    text = (EXAMPLES / "exec-wordcount" / "job.toml").read_text()  # 2 tasks, estimate_s = 10
    # each task gets 5 s and half the budget: 5 s x 2 GPUs x 2000 gwei/s = 20000 gwei > 19999
    spec = spec_of(
        text,
        **{'max_total = "0.0001 eth"': 'max_total = "39998 gwei"',
           "[budget]": "[requirements]\ngpu_count = 2\n[budget]",
           'deadline = "10m"': 'deadline = "4s"'},
    )  # fmt: skip
    assert spec.tasks == 2 and spec.runtime.estimate_s == 10
    deadline, budget = spec_warnings(spec)
    assert deadline.startswith("budget.deadline 4s is shorter than a task's share of "
                               "runtime.estimate_s 10 s (5 s for each of 2 tasks)")  # fmt: skip
    assert budget.startswith("budget.max_total 39998 gwei (19999 gwei for each of 2 tasks)")
    assert "2000 gwei/s x 2 GPU(s) = 20000 gwei" in budget, budget
    fits = spec_of(text, **{'deadline = "10m"': 'deadline = "5s"'})
    assert spec_warnings(fits) == [], "tasks run side by side: 5 s each fits"


def test_validate_prints_warnings_on_stderr_and_still_passes(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(TRAIN.replace('deadline = "30m"', 'deadline = "5s"'))
    (tmp_path / "train.py").write_text("")
    result = CliRunner().invoke(cli, ["job", "validate", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == [
        result.stderr.strip().removeprefix("warning: ")
    ]
    assert result.stderr.startswith("warning: budget.deadline 5s is shorter")
    human = CliRunner().invoke(cli, ["job", "validate", str(spec)])
    assert human.stdout == "ok: a train job of 1 task(s), at most 0.0001 ETH (100000 gwei)\n"


class Daemon:
    """``submit``'s and ``cancel``'s side of the local API."""

    def __init__(self, market: dict[str, Any] | None, cancelled: int = 0) -> None:
        self.market, self.cancelled = market, cancelled
        self.posted: list[str] = []

    def get(self, path: str) -> dict[str, Any]:
        assert path == "/v1/market"
        if self.market is None:
            raise HomeError("not running")
        return self.market

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        self.posted.append(path)
        return {"job_id": "cd" * 16} if path == "/v1/jobs" else {"cancelled": self.cancelled}


def offers(*prices: tuple[str, int]) -> dict[str, Any]:
    """A market of one offer per worker: (GPU class, gwei per second)."""
    return {"workers": [{"offers": [{"gpu_class": c, "price_wei_per_s": str(g * 10**9)}]}
                        for c, g in prices]}  # fmt: skip


def submit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, daemon: Daemon, spec: str) -> Any:
    monkeypatch.setattr(cli_job, "_client", lambda _home: daemon)
    (tmp_path / "job.toml").write_text(spec)
    return CliRunner().invoke(cli, ["job", "submit", str(tmp_path / "job.toml")])


CAPPED = TRAIN.replace('"2000 gwei"', '"1 gwei"')
ON_CPU = CAPPED.replace("[io]", '[requirements]\ngpu_class = "cpu"\n[io]')


def test_submit_warns_of_a_price_cap_below_every_worker_in_the_market(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = submit(monkeypatch, tmp_path, Daemon(offers(("cpu", 100), ("a100", 150))), CAPPED)
    assert result.exit_code == 0 and result.stdout.strip() == "cd" * 16
    assert result.stderr == (
        "warning: budget.max_price_per_s 1 gwei/s is below every worker's price in the market "
        "(2 offer(s), the lowest 100 gwei/s): no worker will bid\n"
    )
    other_class = submit(monkeypatch, tmp_path, Daemon(offers(("a100", 1), ("cpu", 100))), ON_CPU)
    assert "(1 offer(s), the lowest 100 gwei/s)" in other_class.stderr, "a worker we cannot use"


@pytest.mark.parametrize(
    ("market", "spec"),
    [
        (offers(("cpu", 100), ("cpu", 1)), CAPPED),  # one worker at the cap: it bids
        (offers(("cpu", 100)), TRAIN),  # below the cap of 2000 gwei/s
        ({"workers": []}, CAPPED),  # nobody heard of yet: no basis to warn
        (None, CAPPED),  # the daemon's market not answering: submit goes on
    ],
)
def test_submit_does_not_warn_when_a_worker_can_bid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, market: dict[str, Any] | None, spec: str
) -> None:
    daemon = Daemon(market)
    result = submit(monkeypatch, tmp_path, daemon, spec)
    assert result.stderr == "" and daemon.posted == ["/v1/jobs"]


def test_submit_warns_of_a_deadline_shorter_than_the_estimate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short = TRAIN.replace('deadline = "30m"', 'deadline = "5s"')
    result = submit(monkeypatch, tmp_path, Daemon(None), short)
    assert result.exit_code == 0 and result.stderr.startswith("warning: budget.deadline 5s")


def test_a_repeated_cancel_says_there_was_nothing_left(monkeypatch: pytest.MonkeyPatch) -> None:
    for n, said in ((2, "cancelled 2 task(s)"), (0, "nothing to cancel: every task has ended")):
        monkeypatch.setattr(cli_job, "_client", lambda _home, n=n: Daemon(None, cancelled=n))
        result = CliRunner().invoke(cli, ["job", "cancel", "ab" * 16])
        assert result.exit_code == 0 and result.stdout.strip() == said


def test_the_guarantee_of_a_job_of_several_tasks_says_it_is_per_task() -> None:
    two = view([task(0, "running", DEAD), task(0, "running", ALIVE, tid=1)], [])
    assert (
        "\nverification: render, per task: 4 of 4 segments re-executed, P(detect 25 % faked)"
        in cli_job._human_job(two)
    )
    assert f"\nverification: {GUARANTEE}" in cli_job._human_job(FAILED_OVER), "one task"
    none = view(
        two["task_states"], [], verification={"level": "none", "guarantee": "none requested"}
    )
    assert "\nverification: none requested" in cli_job._human_job(none)


@pytest.mark.parametrize("command", ["job status", "job logs", "job cancel", "bids"])
def test_an_empty_job_id_is_named_before_any_daemon_is_asked(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*command.split(), " ", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "JOB_ID: empty" in result.output, result.output
