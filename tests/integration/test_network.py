"""Ten daemons as separate processes on 127.0.0.1, each knowing one bootstrap peer.

Synchronised on what the daemons log ("peer discovered", "worker status ..."), never on sleeps.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid

NODES = 10
INTERVAL_S, OFFLINE_S = 1, 4
ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S=str(INTERVAL_S),
    IDLEGRID_P2P_OFFLINE_AFTER_S=str(OFFLINE_S),
    IDLEGRID_NODE_ROLES="worker",
)


def first_addr(home: Path) -> str:
    status = json.loads(idlegrid(home, "status", "--json", env=ENV).stdout)
    return str(status["p2p"]["addrs"][0])


@pytest.fixture
def network(tmp_path: Path) -> Iterator[list[Daemon]]:
    """A chain: node i bootstraps from node i-1 only."""
    daemons: list[Daemon] = []
    try:
        for i in range(NODES):
            home = tmp_path / f"n{i}"
            assert idlegrid(home, "init", env=ENV).returncode == 0
            args = ("--bootstrap", first_addr(daemons[-1].home)) if daemons else ()
            daemons.append(Daemon(home, args, ENV).wait_started())
        yield daemons
    finally:
        for daemon in daemons:
            daemon.kill()


def peer_id(home: Path) -> str:
    return str(json.loads((home / "identity.json").read_text())["peer_id"])


def test_ten_daemons_find_each_other_and_notice_a_death(network: list[Daemon]) -> None:
    for daemon in network:
        for _ in range(NODES - 1):
            daemon.wait_for("peer discovered", timeout=60)  # 2 shared cores, 10 daemons
    ids = {peer_id(d.home) for d in network}
    for daemon in network:
        peers = json.loads(idlegrid(daemon.home, "peers", "--json", env=ENV).stdout)["peers"]
        assert {p["peer_id"] for p in peers} == ids - {peer_id(daemon.home)}
        market = json.loads(idlegrid(daemon.home, "market", "--json", env=ENV).stdout)
        assert {w["peer_id"] for w in market["workers"]} <= ids

    victim = network[NODES // 2]
    victim_id = peer_id(victim.home)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    others = [d for d in network if d is not victim]
    for daemon in others:
        daemon.wait_for(f"peer={victim_id} old=available new=offline", timeout=OFFLINE_S + 10)

    revived = Daemon(victim.home, (), ENV).wait_started()  # no --bootstrap: peers from sqlite
    network.append(revived)
    for daemon in others:
        daemon.wait_for(f"peer={victim_id} old=offline new=available", timeout=30)
    for daemon in network:
        assert "Traceback" not in daemon.output()
