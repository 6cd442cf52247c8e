"""The daemon as an operator meets it: init, start, status, stop, and every refusal.

Each test drives the real ``idlegrid`` CLI in child processes against a temporary data dir.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid

StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon() -> Iterator[StartDaemon]:
    started: list[Daemon] = []

    def start(home: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(home, args, env or cli_env())
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    result = idlegrid(path, "init", "--role", "worker", "--role", "sentry")
    assert result.returncode == 0, result.stderr
    return path


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the home except the ones a daemon legitimately appends to."""
    skip = {"node.log", "node.db-wal", "node.db-shm", "node.db"}
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in home.rglob("*")
        if p.is_file() and p.name not in skip
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_private_keys_and_is_idempotent(home: Path) -> None:
    assert mode(home / "keys") == 0o700
    for secret in ("keys/node.key", "keys/wallet.key", "api.token"):
        assert mode(home / secret) == 0o600, secret
    ident = json.loads((home / "identity.json").read_text())
    assert ident["peer_id"].startswith("12D3KooW")
    assert 'roles = ["worker", "sentry"]' in (home / "idlegrid.toml").read_text()
    before = snapshot(home)
    again = idlegrid(home, "init", "--role", "requester")
    assert again.returncode == 0
    assert "already initialised" in again.stdout
    assert "roles stay worker, sentry: --role shapes a new data dir only" in again.stdout
    assert snapshot(home) == before


def test_start_status_sigterm(home: Path, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(home).wait_started()
    result = idlegrid(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    ident = json.loads((home / "identity.json").read_text())
    assert status["running"] is True
    assert status["peer_id"] == ident["peer_id"]
    assert status["roles"] == ["worker", "sentry"]
    assert status["home"] == str(home.resolve())
    assert status["uptime_s"] >= 0
    assert status["pid"] == daemon.proc.pid
    began = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - began < 5
    assert not (home / "api.json").exists()
    stopped = idlegrid(home, "status", "--json")
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout) == {
        "running": False,
        "home": str(home.resolve()),
        "peer_id": ident["peer_id"],
    }


def test_sigint_and_node_stop_both_stop_cleanly(home: Path, start_daemon: StartDaemon) -> None:
    assert start_daemon(home).wait_started().stop(signal.SIGINT) == 0
    daemon = start_daemon(home).wait_started()
    result = idlegrid(home, "node", "stop")
    assert result.returncode == 0, result.stderr
    assert daemon.proc.wait(timeout=5) == 0
    assert "no daemon is running" in idlegrid(home, "node", "stop").stdout


def test_second_daemon_on_same_home_is_refused(home: Path, start_daemon: StartDaemon) -> None:
    first = start_daemon(home).wait_started()
    before = snapshot(home)
    second = start_daemon(home)
    assert second.proc.wait(timeout=30) == 1
    assert f"another idlegrid daemon (pid {first.proc.pid})" in second.output()
    assert snapshot(home) == before
    assert idlegrid(home, "status").returncode == 0


def test_daemons_side_by_side(tmp_path: Path, start_daemon: StartDaemon) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    for h in homes:
        assert idlegrid(h, "init").returncode == 0
    daemons = [start_daemon(h) for h in homes]
    ports = set()
    for h, daemon in zip(homes, daemons, strict=True):
        daemon.wait_started()
        status = json.loads(idlegrid(h, "status", "--json").stdout)
        ports.add(status["api"])
        assert status["home"] == str(h.resolve())
    assert len(ports) == 2


@pytest.mark.parametrize(("where", "mode", "fix"), [("node.key", 0o644, "600"), ("", 0o755, "700")])
def test_a_key_or_key_folder_others_can_open_is_refused(
    home: Path, start_daemon: StartDaemon, where: str, mode: int, fix: str
) -> None:
    path = home / "keys" / where if where else home / "keys"
    path.chmod(mode)
    before = snapshot(home)
    daemon = start_daemon(home)
    assert daemon.proc.wait(timeout=30) == 1
    assert f"chmod {fix} {path}" in daemon.output()
    assert snapshot(home) == before
    assert not (home / "node.lock").exists()


@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        ("[api]\nport = 70000\n", (), 2, "api.port = 70000"),
        ('[node]\nroles = ["miner"]\n', (), 2, "node.roles"),
        ("", ("--api-port", "-1"), 2, "--api-port"),
        ("", ("--role", "miner"), 2, "--role"),
        ("", ("--bogus",), 2, "--bogus"),
    ],
)
def test_bad_config_and_flags_exit_2(
    home: Path, setup: str, args: tuple[str, ...], code: int, message: str
) -> None:
    if setup:
        (home / "idlegrid.toml").write_text(setup)
    before = snapshot(home)
    result = idlegrid(home, "node", "start", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(home) == before


def test_bad_env_var_exits_2(home: Path) -> None:
    result = idlegrid(home, "config", "show", env=cli_env(IDLEGRID_API_PORT="http"))
    assert result.returncode == 2
    assert 'api.port = "http" (from env IDLEGRID_API_PORT): expected an integer' in result.stderr


def test_uninitialised_home_is_a_clear_failure(tmp_path: Path) -> None:
    result = idlegrid(tmp_path / "nothing", "node", "start")
    assert result.returncode == 1
    assert "not initialised" in result.stderr
    assert not (tmp_path / "nothing").exists()


def test_encrypted_keys(tmp_path: Path, start_daemon: StartDaemon) -> None:
    home = tmp_path / "enc"
    asked = idlegrid(home, "init", "--encrypt")  # no terminal to ask on, and no passphrase
    assert asked.returncode == 2 and "set IDLEGRID_PASSPHRASE" in asked.stderr, asked.stderr
    assert not home.exists()
    env = cli_env(IDLEGRID_PASSPHRASE="correct horse")
    assert idlegrid(home, "init", "--encrypt", env=env).returncode == 0
    secret = json.loads((home / "keys" / "node.key").read_text())
    assert secret["encryption"] != "none"
    locked = idlegrid(home, "node", "start")
    assert locked.returncode == 1
    assert "is encrypted" in locked.stderr
    wrong = idlegrid(home, "node", "start", env=cli_env(IDLEGRID_PASSPHRASE="wrong"))
    assert wrong.returncode == 1
    assert "wrong passphrase" in wrong.stderr
    start_daemon(home, env=env).wait_started()
    assert idlegrid(home, "status").returncode == 0


def test_kill_9_leaves_a_home_that_restarts(home: Path, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(home).wait_started()
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    assert idlegrid(home, "status").returncode == 1  # stale api.json is not trusted
    start_daemon(home).wait_started()
    assert idlegrid(home, "status").returncode == 0


def test_config_show_and_wallet_address(home: Path) -> None:
    shown = json.loads(idlegrid(home, "config", "show", "--json").stdout)
    assert shown["values"]["node.roles"] == ["worker", "sentry"]
    assert shown["sources"]["node.roles"].startswith("file ")
    assert shown["sources"]["api.port"] == "default"
    typo = idlegrid(home.parent / "typo", "config", "show")
    assert typo.returncode == 0 and "these are the defaults" in typo.stderr, typo.stderr
    wallet = json.loads(idlegrid(home, "wallet", "address", "--json").stdout)
    assert wallet["binding_valid"] is True
    assert wallet["address"] == json.loads((home / "identity.json").read_text())["address"]


def test_idlegrid_home_env_selects_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    env = cli_env(IDLEGRID_HOME=str(home))
    result = subprocess.run(
        [sys.executable, "-m", "node", "init"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (home / "identity.json").exists()


def test_version_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "version", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["libp2p"] == "0.8.1"
