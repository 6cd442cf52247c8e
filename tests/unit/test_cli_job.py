"""``idlegrid job validate``: a good spec passes, a bad one exits 2 naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

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
