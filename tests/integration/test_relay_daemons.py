"""Circuit relay v2 between real daemons on 127.0.0.1: a target that listens on nothing is
reached through a relay. Synchronised on what the daemons log, never on sleeps."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemons import Daemon, cli_env, idlegrid, peer_id
from tests.integration.test_discovery import logged


def status_addr(home: Path, env: dict[str, str]) -> str:
    return str(json.loads(idlegrid(home, "status", "--json", env=env).stdout)["p2p"]["addrs"][0])


def test_daemon_behind_nat_is_reached_through_a_relay(tmp_path: Path) -> None:
    """Both ends listen on nothing (both behind NAT): the target's only address is a circuit
    through the relay, and the source, having no address either, cannot be dialled by the
    target instead (with a listening source the two raced, and the target's direct dial to
    it sometimes won)."""
    base = {"IDLEGRID_P2P_ANNOUNCE_INTERVAL_S": "1", "IDLEGRID_P2P_OFFLINE_AFTER_S": "4"}
    relay_env = cli_env(**base, IDLEGRID_P2P_RELAY_HOP="true")
    target_env = cli_env(**base, IDLEGRID_P2P_RELAY_RESERVE="true", IDLEGRID_P2P_LISTEN="")
    source_env = cli_env(**base, IDLEGRID_P2P_LISTEN="")
    daemons: list[Daemon] = []
    try:
        for name, env in (("relay", relay_env), ("target", target_env), ("source", source_env)):
            assert idlegrid(tmp_path / name, "init", env=env).returncode == 0
        relay = Daemon(tmp_path / "relay", (), relay_env).wait_started()
        daemons.append(relay)
        boot = ("--bootstrap", status_addr(relay.home, relay_env))
        target = Daemon(tmp_path / "target", boot, target_env).wait_started()
        source = Daemon(tmp_path / "source", boot, source_env).wait_started()
        daemons += [target, source]
        logged(target, "relay reservations")
        line = source.wait_for("p2p-circuit/p2p/" + peer_id(target.home), timeout=60)
        assert "connected" in line
        peers = json.loads(idlegrid(source.home, "peers", "--json", env=source_env).stdout)
        by_id = {p["peer_id"]: p for p in peers["peers"]}
        assert by_id[peer_id(target.home)]["connected"]
        assert all("/p2p-circuit/" in a for a in by_id[peer_id(target.home)]["addrs"])
    finally:
        for daemon in daemons:
            daemon.kill()
