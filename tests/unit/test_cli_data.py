"""``idlegrid data``: add and status on a real data dir; bad input exits 2 naming the argument."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from node.cli import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["data", *args])
    return result.exit_code, result.output


def test_add_then_status(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("hello\n" * 100)
    home = str(tmp_path / "home")
    code, out = run("add", str(tmp_path / "d"), "--home", home, "--json")
    assert code == 0, out
    added = json.loads(out)
    assert (added["files"], added["chunks"], added["bytes"]) == (1, 1, 600)
    code, out = run("add", str(tmp_path / "d"), "--home", home)  # same content, same id
    assert out.strip() == added["dataset_id"]
    code, out = run("status", "--home", home, "--json")
    (row,) = json.loads(out)
    assert (row["dataset_id"], row["state"], row["bytes_have"]) == (
        added["dataset_id"], "complete", 600,
    )  # fmt: skip
    code, out = run("status", "--home", home)
    assert "100%" in out and "complete" in out


def test_bad_input_exits_2(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    code, out = run("add", str(tmp_path / "d"), "--home", home)
    assert code == 2 and "PATH" in out and "link" in out
    code, out = run("get", "nothex", "--out", str(tmp_path / "o"), "--from", "x", "--home", home)
    assert code == 2 and "ID" in out
    code, out = run("status", "ab" * 31, "--home", home)
    assert code == 2 and "ID" in out
    code, out = run(
        "get", "ab" * 32, "--out", str(tmp_path / "o"), "--from", "nope", "--home", home
    )
    assert code == 2 and "--from" in out
