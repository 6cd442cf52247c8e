"""``idlegrid job validate``: a good spec passes, a bad one exits 2 naming the key."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node import cli_job
from node.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "exec-wordcount" / "job.toml"


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["job", "validate", str(path), "--json"])
    return result.exit_code, result.output


def test_the_example_is_valid() -> None:
    code, out = validate(EXAMPLE)
    assert code == 0, out
    shown = json.loads(out)
    assert shown["kind"] == "exec"
    assert shown["tasks"] == 2
    assert shown["max_total_wei"] == str(10**14)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (('max_total = "0.0001 eth"', "max_total = 1.5"), "budget.max_total"),
        (('kind = "exec"', 'kind = "mine"'), "kind"),
        (("tasks = 2", "tasks = 0"), "tasks"),
        (('deadline = "10m"', 'deadline = "soon"'), "budget.deadline"),
        (("[io]", 'colour = "red"\n[io]'), "colour"),
    ],
)
def test_a_bad_spec_exits_2_naming_the_key(
    tmp_path: Path, change: tuple[str, str], names: str
) -> None:
    text = EXAMPLE.read_text()
    assert change[0] in text
    spec = tmp_path / "job.toml"
    spec.write_text(text.replace(*change))
    code, out = validate(spec)
    assert code == 2, out
    assert names in out


def test_a_missing_input_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(EXAMPLE.read_text())
    code, out = validate(spec)
    assert code == 2
    assert "io.inputs" in out
    assert "count.py" in out


def test_not_toml_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text("kind = \n")
    code, out = validate(spec)
    assert code == 2
    assert "not valid TOML" in out


class Scripted:
    """The daemon's answers to ``job submit --wait``, one view per poll (the CLI's output is
    what is tested here; the daemon side is tested with real daemons elsewhere)."""

    def __init__(self, views: list[dict[str, Any]]) -> None:
        self.views = views

    def get(self, path: str) -> dict[str, Any]:
        if path.startswith("/v1/job/logs"):
            return {"cursor": 0, "lines": []}
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]


def test_waiting_on_a_task_nobody_takes_says_how_long_and_how_to_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_job.time, "sleep", lambda _s: None)
    deadline = time.time_ns() // 1_000_000 + 600_000
    passed = "every worker passed: ZXPBa5GV: no room for its data: needs 11 MB, 0 MB free"
    view = {
        "state": "open",
        "deadline_ms": deadline,
        "task_states": [{"task": 0, "state": "queued", "worker": "", "reason": passed}],
    }
    done = {**view, "state": "cancelled"}  # fmt: skip
    final = cli_job._follow(Scripted([view, view, done]), "ab" * 16, quiet=False)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert final["state"] == "cancelled"
    assert f"task 0: queued - {passed}" in out
    assert out.count("auctioned again every few seconds") == 1
    assert "in 9 min" in out or "in 10 min" in out
    assert "`idlegrid job cancel abababababab` ends it" in out
