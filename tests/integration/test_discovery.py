"""Discovery without bootstrap peers (mDNS, then the DHT), between real daemons on 127.0.0.1.

Synchronised on what the daemons log, never on sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid, peer_id

MDNS_ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1",
    IDLEGRID_P2P_OFFLINE_AFTER_S="4",
    IDLEGRID_P2P_MDNS="true",
    IDLEGRID_P2P_MDNS_INTERFACE="lo",
)
OTHER_NETWORK_ENV = {**MDNS_ENV, "IDLEGRID_P2P_NETWORK": "other"}


def logged(daemon: Daemon, text: str, timeout: float = 20) -> None:
    """Returns once ``text`` was logged (before now, or within ``timeout``)."""
    if not any(text in line for line in daemon.lines):
        daemon.wait_for(text, timeout)


@pytest.fixture
def mdns_daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """The run's only mDNS daemons, used by one test: a pair per test process (as a
    module-scoped fixture gave under xdist) would hear the other pair on the loopback.
    The third is on another network, on the same LAN."""
    daemons: list[Daemon] = []
    try:
        for name, env in (("a", MDNS_ENV), ("b", MDNS_ENV), ("c", OTHER_NETWORK_ENV)):
            home = tmp_path / name
            assert idlegrid(home, "init", env=env).returncode == 0
            daemons.append(Daemon(home, (), env).wait_started())
        yield daemons
    finally:
        for daemon in daemons:
            daemon.kill()


def test_mdns_without_an_interface_is_refused_naming_the_key(tmp_path: Path) -> None:
    env = cli_env(IDLEGRID_P2P_MDNS="true")
    assert idlegrid(tmp_path / "c", "init").returncode == 0
    done = idlegrid(tmp_path / "c", "node", "start", env=env)
    assert done.returncode == 2
    assert "p2p.mdns_interface" in done.stderr + done.stdout


def test_two_daemons_find_each_other_by_mdns_then_serve_the_dht(
    mdns_daemons: list[Daemon],
) -> None:
    a, b, c = mdns_daemons
    for daemon in (a, b):
        logged(daemon, "peer discovered")  # the other's node.hello, over gossip
    # Whichever heard the other first dialled it; the other then knew it from its hello.
    learned = [line for d in (a, b) for line in d.output().splitlines() if "learned" in line]
    assert learned and all("source=mdns" in line for line in learned), learned
    for me, other in ((a, b), (b, a)):
        peers = json.loads(idlegrid(me.home, "peers", "--json", env=MDNS_ENV).stdout)["peers"]
        assert [p["peer_id"] for p in peers if p["connected"]] == [peer_id(other.home)]
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
    # c announced on the same loopback from the start, and is on another network: by now
    # (a and b found each other and stored DHT records) it would have been dialled.
    c_status = json.loads(idlegrid(c.home, "status", "--json", env=OTHER_NETWORK_ENV).stdout)
    assert c_status["p2p"]["network"] == "other"
    assert peer_id(c.home) not in a.output() + b.output()
    peers = json.loads(idlegrid(c.home, "peers", "--json", env=OTHER_NETWORK_ENV).stdout)["peers"]
    assert not [p for p in peers if p["connected"]]
