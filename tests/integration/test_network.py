"""Ten daemons as separate processes on 127.0.0.1, each knowing one bootstrap peer.

Synchronised on what the daemons log ("peer discovered", "worker status ..."), never on sleeps.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.client import ApiClient
from node.home import Home
from tests.chain.conftest import free_port
from tests.daemons import Daemon, cli_env, idlegrid, peer_id

NODES = 10
INTERVAL_S, OFFLINE_S = 1, 4
DISCOVERY_S = 30  # the bound: every daemon sees every other within it
NOTICE_SLACK_S = 2.0
ENV = cli_env(
    IDLEGRID_P2P_ANNOUNCE_INTERVAL_S=str(INTERVAL_S),
    IDLEGRID_P2P_OFFLINE_AFTER_S=str(OFFLINE_S),
    IDLEGRID_NODE_ROLES="worker",
)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[list[Daemon]]:
    """A chain: node i bootstraps from node i-1 only. Homes are made and daemons started all
    at once (ports chosen up front), so the test waits for the slowest, not for the sum."""
    homes = [tmp_path / f"n{i}" for i in range(NODES)]
    with ThreadPoolExecutor(max_workers=NODES) as pool:
        inits = list(pool.map(lambda home: idlegrid(home, "init", env=ENV), homes))
    assert all(done.returncode == 0 for done in inits), [d.stderr for d in inits]
    ports = [free_port() for _ in homes]
    daemons: list[Daemon] = []
    try:
        for i, home in enumerate(homes):
            env = ENV | {"IDLEGRID_P2P_LISTEN": f"/ip4/127.0.0.1/tcp/{ports[i]}"}
            boot = f"/ip4/127.0.0.1/tcp/{ports[i - 1]}/p2p/{peer_id(homes[i - 1])}"
            daemons.append(Daemon(home, ("--bootstrap", boot) if i else (), env))
        for daemon in daemons:
            daemon.wait_started()
        yield daemons
    finally:
        for daemon in daemons:
            daemon.kill()


def api(daemon: Daemon) -> ApiClient:
    return ApiClient(Home(daemon.home), timeout_s=10.0)


# alone: ten daemons on two cores, timed by the 30 s and the offline timeout; beside
# another test's daemons they missed the timeout once
@pytest.mark.alone
def test_ten_daemons_find_each_other_and_notice_a_death(network: list[Daemon]) -> None:
    deadline = time.monotonic() + DISCOVERY_S  # from when the last daemon listens
    ids = {peer_id(d.home) for d in network}
    for daemon in network:
        daemon.wait_count("peer discovered", NODES - 1, timeout=left(deadline))
        for other in ids - {peer_id(daemon.home)}:  # in its order book too
            daemon.wait_count(f"peer={other} old=None new=available", 1, timeout=left(deadline))
    for daemon in network:  # what `idlegrid peers` and `idlegrid market` show, from the API
        others = ids - {peer_id(daemon.home)}
        peers = api(daemon).get("/v1/peers")["peers"]
        assert {p["peer_id"] for p in peers} == others
        market = api(daemon).get("/v1/market")
        assert others <= {w["peer_id"] for w in market["workers"]} <= ids
    first, others = network[0], ids - {peer_id(network[0].home)}
    shown = idlegrid(first.home, "peers", env=ENV).stdout  # the tables an operator reads
    assert f"\n{NODES - 1} peers" in shown and all(other in shown for other in others)
    book = idlegrid(first.home, "market", env=ENV).stdout.splitlines()
    assert all(any(o in row and " available " in row and " cpu " in row for row in book)
               for o in others)  # fmt: skip

    victim = network[NODES // 2]
    victim_id = peer_id(victim.home)
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.proc.wait(timeout=10)
    others = [d for d in network if d is not victim]
    for daemon in others:
        daemon.wait_for(f"peer={victim_id} old=available new=offline", timeout=OFFLINE_S + 10)
        # the configured timeout, and a little for the last of nine processes to get a turn
        assert time.monotonic() - killed <= OFFLINE_S + NOTICE_SLACK_S

    revived = Daemon(victim.home, (), victim.env).wait_started()  # no --bootstrap: from sqlite
    network.append(revived)
    for daemon in others:
        daemon.wait_for(f"peer={victim_id} old=offline new=available", timeout=30)
    for daemon in network:
        assert "Traceback" not in daemon.output()


def left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)
