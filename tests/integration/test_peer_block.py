"""``idlegrid peers block/unblock`` on two real daemons over 127.0.0.1.

A blocks B: B is disconnected, B's redials are closed as soon as A identifies them, and the
block survives A's restart; once lifted (or run out) the two reconnect through normal redial.
Synchronised on what the daemons log, never on sleeps.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, cli_env, idlegrid, peer_id

ENV = cli_env(IDLEGRID_P2P_ANNOUNCE_INTERVAL_S="1")
REFUSED = "closing a connection from a blocked peer"
CONNECTED = "node.network: connected"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_json(home: Path, *args: str) -> Any:
    done = idlegrid(home, *args, "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def peer_entry(home: Path, other: str) -> dict[str, Any]:
    peers = cli_json(home, "peers")["peers"]
    return next(p for p in peers if p["peer_id"] == other)


def wait_connected(home: Path, other: str, timeout_s: float = 30, *, want: bool = True) -> None:
    """Polls the API: either side may redial first, so neither log is the signal."""
    deadline = time.monotonic() + timeout_s
    while peer_entry(home, other)["connected"] is not want:
        assert time.monotonic() < deadline, f"{other} connected is not {want} in {timeout_s} s"
        time.sleep(0.3)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, str]]:
    """A on a fixed port (so B redials the same address after A restarts), B bootstrapped."""
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    for home in (a_home, b_home):
        assert idlegrid(home, "init", env=ENV).returncode == 0
    a_listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    a_addr = f"{a_listen}/p2p/{peer_id(a_home)}"
    daemons = [Daemon(a_home, ("--listen", a_listen), ENV).wait_started()]
    try:
        daemons.append(Daemon(b_home, ("--bootstrap", a_addr), ENV).wait_started())
        yield daemons[0], daemons[1], a_listen
    finally:
        for daemon in daemons:
            daemon.kill()


def test_block_disconnects_refuses_persists_and_unblock_reconnects(
    pair: tuple[Daemon, Daemon, str],
) -> None:
    a, b, a_listen = pair
    a_id, b_id = peer_id(a.home), peer_id(b.home)
    a.wait_for(f"peer discovered peer={b_id}")

    blocked = cli_json(a.home, "peers", "block", b_id, "--reason", "test")["blocked"]
    assert blocked["peer_id"] == b_id and blocked["until_ms"] is None
    a.wait_for(f"{REFUSED} peer={b_id}", timeout=30)  # B redialled, A closed it
    # B keeps redialling; each of its connections lives until A identifies it, so a look at
    # one instant may catch one: disconnected is what A's view settles to, between redials.
    wait_connected(a.home, b_id, want=False)
    assert peer_entry(a.home, b_id)["blocked"]
    assert [x["peer_id"] for x in cli_json(a.home, "peers")["blocked"]] == [b_id]

    a.stop()
    a = Daemon(a.home, ("--listen", a_listen), ENV).wait_started()
    try:
        a.wait_for(f"{REFUSED} peer={b_id}", timeout=30)  # restored from sqlite at start
        assert peer_entry(a.home, b_id)["blocked"]
        assert f"{CONNECTED} peer={b_id}" not in a.output(), "A never dials B while blocked"

        assert cli_json(a.home, "peers", "unblock", b_id)["unblocked"] is True
        wait_connected(a.home, b_id)  # through normal redial, whichever side dials first
        assert not peer_entry(a.home, b_id)["blocked"]
        wait_connected(b.home, a_id)

        until = cli_json(a.home, "peers", "block", b_id, "--for", "3s")["blocked"]["until_ms"]
        assert until is not None
        a.wait_for(f"{REFUSED} peer={b_id}", timeout=30)
        wait_connected(a.home, b_id)  # the block ran out by itself
    finally:
        a.kill()


def test_bad_input_exits_2_naming_the_field(tmp_path: Path) -> None:
    home = tmp_path / "n"
    assert idlegrid(home, "init", env=ENV).returncode == 0
    bad_id = idlegrid(home, "peers", "block", "not-a-peer", env=ENV)
    assert bad_id.returncode == 2 and "PEER_ID" in bad_id.stderr
    some_id = peer_id(home)
    bad_for = idlegrid(home, "peers", "block", some_id, "--for", "soon", env=ENV)
    assert bad_for.returncode == 2 and "--for" in bad_for.stderr
