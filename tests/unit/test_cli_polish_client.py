"""A command that needs the daemon, run where none is, names the command that starts one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from node.cli import cli


def test_no_daemon_names_how_to_start_it(tmp_path: Path) -> None:
    home = tmp_path / "node"
    home.mkdir()
    (home / "identity.json").write_text(json.dumps({"peer_id": "12D3KooWx"}))
    result = CliRunner().invoke(cli, ["job", "status", "--home", str(home)])
    assert result.exit_code == 1
    assert (
        f"no idlegrid daemon is running in {home}: "
        f"start it with `idlegrid node start --home {home}`" in result.output
    )


def test_no_node_there_names_init_first(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    result = CliRunner().invoke(cli, ["market", "--home", str(home)])
    assert result.exit_code == 1
    assert f"`idlegrid init --home {home}`, then `idlegrid node start --home {home}`" in (
        result.output
    )
