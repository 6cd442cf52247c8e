"""Datasets between real daemons on 127.0.0.1: served with the node's key to granted peers,
fetched through the local API, holders found in the DHT without --from, routes probed and
shown; a CLI with no daemon (a throwaway key) is refused what it was not granted.

Synchronised on what the daemons log and on CLI exits, never on sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli_env, idlegrid, peer_id
from tests.integration.test_transfer import make_tree, tree

pytestmark = pytest.mark.slow
ENV = cli_env()


def addr(daemon: Daemon) -> str:
    """Where the daemon listens, from its "p2p listening" log line (a CLI call costs seconds)."""
    line = next(x for x in daemon.lines if "p2p listening" in x)
    return line.split("addrs=['")[1].split("'")[0]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """a holds data; b bootstraps to a."""
    root = tmp_path_factory.mktemp("nodes")
    daemons: list[Daemon] = []
    try:
        for name in ("a", "b"):
            assert idlegrid(root / name, "init", env=ENV).returncode == 0
        daemons.append(Daemon(root / "a", (), ENV).wait_started())
        daemons.append(Daemon(root / "b", ("--bootstrap", addr(daemons[0])), ENV).wait_started())
        yield daemons[0], daemons[1]
    finally:
        for daemon in daemons:
            daemon.kill()


def add(home: Path, src: Path, *grant: str) -> str:
    done = idlegrid(home, "data", "add", str(src), *grant, "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["served_by_daemon"] is True
    return str(info["dataset_id"])


def test_granted_peer_fetches_through_its_daemon_finding_the_holder_in_the_dht(
    nodes: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = nodes
    src = tmp_path / "src"
    make_tree(src, big_files=3, small_files=30)
    dataset_id = add(a.home, src, "--grant", peer_id(b.home))
    a.wait_for("dht provided dataset")

    out = tmp_path / "b"
    got = idlegrid(b.home, "data", "get", dataset_id, "--out", str(out), "--json", env=ENV)
    assert got.returncode == 0, got.stderr + b.output()[-3000:]
    assert tree(out) == tree(src)
    assert "dht=1" in b.wait_for("holders to probe").split()
    assert list(json.loads(got.stdout)["sources"]) == [peer_id(a.home)]

    status = json.loads(idlegrid(b.home, "data", "status", dataset_id, "--json", env=ENV).stdout)
    (route,) = status[0]["routes"]
    assert route["peer_id"] == peer_id(a.home) and route["state"] == "used"
    assert route["rtt_us"] > 0 and route["rate_bps"] > 0 and route["window"] >= 2
    assert route["route"].startswith("/ip4/127.0.0.1/tcp/")

    # A CLI without a daemon gets a throwaway key, which a was not told to serve.
    stranger = tmp_path / "stranger"
    refused = idlegrid(stranger, "data", "get", dataset_id, "--out", str(stranger / "o"),
                       "--from", addr(a), env=ENV)  # fmt: skip
    assert refused.returncode == 1 and "does not serve it to us" in refused.stderr
    assert not (stranger / "o").exists()


def test_public_dataset_then_two_holders(nodes: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    a, b = nodes
    src = tmp_path / "src"
    make_tree(src, big_files=4, small_files=10)
    dataset_id = add(a.home, src, "--public")
    by_id = ("--from", peer_id(a.home))
    done = idlegrid(
        b.home, "data", "get", dataset_id, "--out", str(tmp_path / "b"), *by_id, env=ENV
    )
    assert done.returncode == 0, done.stderr
    # b holds it now; granting it to anyone makes b a second holder.
    granted = idlegrid(b.home, "data", "grant", dataset_id, "*", "--json", env=ENV)
    assert json.loads(granted.stdout)["served_by_daemon"] is True
    out, other = tmp_path / "o", tmp_path / "other"
    both = ("--from", addr(a), "--from", addr(b))
    got = idlegrid(other, "data", "get", dataset_id, "--out", str(out), *both, "--json", env=ENV)
    assert got.returncode == 0, got.stderr
    assert tree(out) == tree(src)
    moved = json.loads(got.stdout)["sources"]
    assert set(moved) == {peer_id(a.home), peer_id(b.home)}
    assert sum(s["chunks"] for s in moved.values()) == json.loads(got.stdout)["chunks_moved"]

    bad = idlegrid(b.home, "data", "grant", dataset_id, "not-a-peer", env=ENV)
    assert bad.returncode == 2 and "PEER" in bad.stderr
    missing = idlegrid(b.home, "data", "grant", "00" * 32, "*", env=ENV)
    assert missing.returncode == 2 and "not held whole here" in missing.stderr


def test_a_dataset_sealed_for_a_peer_is_ciphertext_on_the_holder(
    nodes: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = nodes
    src = tmp_path / "src"
    make_tree(src, big_files=2, small_files=5)
    (src / "secret.txt").write_bytes(b"a plaintext marker line\n" * 2000)
    done = idlegrid(a.home, "data", "add", str(src), "--for", peer_id(b.home), "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["sealed_for"] == peer_id(b.home) and info["grants"] == [peer_id(b.home)]
    chunks = [p.read_bytes() for p in (a.home / "chunks").rglob("*") if p.is_file()]
    assert chunks and not any(b"plaintext marker" in c for c in chunks)

    out = tmp_path / "b"
    by_id = ("--from", peer_id(a.home))
    got = idlegrid(b.home, "data", "get", info["dataset_id"], "--out", str(out), *by_id, "--json",
                   env=ENV)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["sealed"] is json.loads(got.stdout)["opened"] is True
    assert tree(out) == tree(src)  # opened with b's node key; the sealed files are gone

    # Anyone may fetch the ciphertext once it is granted '*'; a get with no daemon (a throwaway
    # key) says that it could not open it, rather than leave a folder that looks empty.
    assert idlegrid(a.home, "data", "grant", info["dataset_id"], "*", env=ENV).returncode == 0
    other, copy = tmp_path / "other", tmp_path / "copy"
    got = idlegrid(other, "data", "get", info["dataset_id"], "--out", str(copy), "--from", addr(a),
                   "--json", env=ENV)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["sealed"] is True and json.loads(got.stdout)["opened"] is False
    assert "sealed to one node's key" in got.stderr and ".idlegrid-sealed" in got.stderr
    assert sorted(p.name for p in copy.iterdir()) == [".idlegrid-sealed"]
