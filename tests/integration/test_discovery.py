"""Discovery without bootstrap peers, between real daemons on 127.0.0.1.

Synchronised on what the daemons log, never on sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid

MDNS_ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_P2P_MDNS="true",
    IDLEGRID_P2P_MDNS_INTERFACE="lo",
)


def peer_id(home: Path) -> str:
    return str(json.loads((home / "identity.json").read_text())["peer_id"])


def logged(daemon: Daemon, text: str, timeout: float = 20) -> None:
    """Returns once ``text`` was logged (before now, or within ``timeout``)."""
    if not any(text in line for line in daemon.lines):
        daemon.wait_for(text, timeout)


@pytest.fixture
def two_mdns_daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        for name in ("a", "b"):
            home = tmp_path / name
            assert idlegrid(home, "init", env=MDNS_ENV).returncode == 0
            daemons.append(Daemon(home, (), MDNS_ENV).wait_started())
        yield daemons
    finally:
        for daemon in daemons:
            daemon.kill()


def test_two_daemons_find_each_other_by_mdns_without_bootstrap(
    two_mdns_daemons: list[Daemon],
) -> None:
    a, b = two_mdns_daemons
    for daemon in (a, b):
        logged(daemon, "peer discovered")  # the other's node.hello, over gossip
    # Whichever heard the other first dialled it; the other then knew it from its hello.
    learned = [line for d in (a, b) for line in d.output().splitlines() if "learned" in line]
    assert learned and all("source=mdns" in line for line in learned), learned
    for me, other in ((a, b), (b, a)):
        peers = json.loads(idlegrid(me.home, "peers", "--json", env=MDNS_ENV).stdout)["peers"]
        assert [p["peer_id"] for p in peers if p["connected"]] == [peer_id(other.home)]


def test_mdns_without_an_interface_is_refused_naming_the_key(tmp_path: Path) -> None:
    env = cli_env(IDLEGRID_P2P_MDNS="true")
    assert idlegrid(tmp_path / "c", "init").returncode == 0
    done = idlegrid(tmp_path / "c", "node", "start", env=env)
    assert done.returncode == 2
    assert "p2p.mdns_interface" in done.stderr + done.stdout


def test_dht_cli_on_daemons_found_by_mdns(two_mdns_daemons: list[Daemon]) -> None:
    a, b = two_mdns_daemons
    logged(a, "dht provided roles")
    logged(b, "dht provided roles")
    status = json.loads(idlegrid(a.home, "dht", "status", "--json", env=MDNS_ENV).stdout)
    assert status == {"mode": "server", "routing_table": 1}
    found = idlegrid(a.home, "dht", "providers", "requester", "--json", env=MDNS_ENV)
    providers = json.loads(found.stdout)["providers"]
    assert [p["peer_id"] for p in providers] == [peer_id(b.home)]
    where = json.loads(
        idlegrid(a.home, "dht", "find", peer_id(b.home), "--json", env=MDNS_ENV).stdout
    )
    assert where["addrs"] and where["addrs"][0].endswith(peer_id(b.home))
    assert idlegrid(a.home, "dht", "find", "nonsense", env=MDNS_ENV).returncode == 2


def status_addr(home: Path, env: dict[str, str]) -> str:
    return str(json.loads(idlegrid(home, "status", "--json", env=env).stdout)["p2p"]["addrs"][0])


def test_daemon_behind_nat_is_reached_through_a_relay(tmp_path: Path) -> None:
    """The target listens on nothing: its only address is a circuit through the relay."""
    base = {"IDLEGRID_P2P_ANNOUNCE_INTERVAL_S": "1", "IDLEGRID_P2P_OFFLINE_AFTER_S": "4"}
    relay_env = cli_env(**base, IDLEGRID_P2P_RELAY_HOP="true")
    target_env = cli_env(**base, IDLEGRID_P2P_RELAY_RESERVE="true", IDLEGRID_P2P_LISTEN="")
    source_env = cli_env(**base)
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
