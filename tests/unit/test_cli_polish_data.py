"""``idlegrid data``: ``add --grant '*'`` grants anyone as ``data grant ID '*'`` does, and a get
that a holder refused names the grant that would let it through."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node import cli_data
from node.cli import cli
from node.transfer import commands, local
from node.transfer.fetcher import FetchFailed
from storage import transfer_access as access
from storage import transfer_journal as journal
from storage.db import open_sync

DATASET = "ab" * 32
PEER = "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
REFUSED = f"{DATASET[:12]}: no source serves it to us (12D3Ko..NASuq: does not serve it to us)"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["data", *args])


def grants_of(home: Path, dataset_id: str) -> list[str]:
    conn = open_sync(home / "node.db")
    try:
        return access.grants(conn, bytes.fromhex(dataset_id))
    finally:
        conn.close()


def test_add_grant_star_grants_anyone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "f.txt").write_text("hello\n")
    result = run("add", str(tmp_path / "f.txt"), "--grant", "*", "--public", "--home", str(home),
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["grants"] == ["*"], "--public beside --grant '*' grants anyone once"
    assert grants_of(home, info["dataset_id"]) == ["*"]
    sealed = run("add", str(tmp_path / "f.txt"), "--for", "*", "--home", str(home))
    assert sealed.exit_code == 2 and "not a node's peer id" in sealed.output, "* has no key"


def test_a_sealed_dataset_takes_4_mib_chunks_unless_told(tmp_path: Path) -> None:
    home, big = tmp_path / "home", tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))

    def chunks(*args: str) -> int:
        result = run("add", str(big), "--home", str(home), "--json", *args)
        assert result.exit_code == 0, result.output
        return int(json.loads(result.stdout)["chunks"])

    assert chunks() == 9, "an open file: 1 MiB chunks"
    # The sealed tar is a little over 9 MiB; the key box goes in a pack chunk of its own.
    assert chunks("--for", PEER) == 3 + 1, "sealed: 4 MiB chunks (it shares none anyway)"
    assert chunks("--for", PEER, "--chunk-kib", "1024") == 10 + 1


def test_status_shows_a_running_fetchs_rate_and_time_left_and_a_stopped_one(
    tmp_path: Path,
) -> None:
    home, src = tmp_path / "home", tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 << 20))
    _, manifest = local.add(home / "node.db", local.chunk_store(home), src)
    fetching, ended = b"\x01" * 32, b"\x02" * 32
    now = int(time.time() * 1000)
    conn = open_sync(home / "node.db")
    try:
        for dataset_id, at in ((fetching, now), (ended, now - 60_000)):
            journal.open_transfer(conn, dataset_id, manifest, journal.FETCHED, at)
            journal.mark_have(conn, dataset_id, [0], 1 << 20, at)
            routes = [
                access.ProbeRow(p, "/ip4/127.0.0.1", "used", 900, 1_000_000, 8, at)
                for p in ("peer-a", "peer-b")
            ] + [access.ProbeRow("peer-c", "/ip4/127.0.0.1", "standby", 900, 5, 8, at)]
            access.record_probes(conn, dataset_id, routes)
        conn.commit()
    finally:
        conn.close()

    def status(dataset_id: bytes) -> Any:
        result = run("status", dataset_id.hex(), "--home", str(home), "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]

    running, stopped = status(fetching), status(ended)
    assert running["running"] and running["chunk_kib"] == 1024
    assert running["rate_bps"] == 2_000_000, "the used routes' rates together"
    assert running["eta_s"] == round((2 << 20) / 2_000_000, 1), "2 MiB left at 2 MB/s"
    assert not stopped["running"], "recorded a minute ago: no fetch drives it"
    assert stopped["rate_bps"] is None and stopped["state"] == journal.FETCHING
    table = run("status", fetching.hex(), "--home", str(home)).output
    assert "2.0 MB/s" in table and " 1 s " in table and "1024 KiB" in table, table
    assert " stopped " in run("status", ended.hex(), "--home", str(home)).output
    assert run("status", "--home", str(home)).exit_code == 0


def test_serve_names_a_bad_or_taken_listen_address(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    bad = run("serve", "--home", home, "--listen", "/ip4/1.2.3/tcp/x")
    assert bad.exit_code == 2 and "--listen: bad listen multiaddr" in bad.output, bad.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("serve", "--home", home, "--listen", f"/ip4/127.0.0.1/tcp/{port}")
    assert busy.exit_code == 1 and "is already in use" in busy.output, busy.output
    assert busy.exception is None or isinstance(busy.exception, SystemExit)


def test_a_chunk_smaller_than_a_pack_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello\n")
    small = run("add", str(tmp_path / "f.txt"), "--home", str(tmp_path / "h"), "--chunk-kib", "64")
    assert small.exit_code == 2 and "--chunk-kib" in small.output, small.output


def test_a_get_with_no_daemon_names_a_bare_peer_id_and_an_unreachable_holder(
    tmp_path: Path,
) -> None:
    home, out = str(tmp_path / "home"), str(tmp_path / "out")
    bare = run("get", DATASET, "--out", out, "--from", PEER, "--home", home)
    assert bare.exit_code == 2 and "multiaddr ending in /p2p/" in bare.output, bare.output
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: the dial is refused
        gone = run("get", DATASET, "--out", out, "--home", home,
                   "--from", f"/ip4/127.0.0.1/tcp/{port}/p2p/{PEER}")  # fmt: skip
    assert gone.exit_code == 1 and "no holder reachable" in gone.output, gone.output


class RefusingDaemon:
    """A daemon whose fetch ends as the holders' answers made it end."""

    error = REFUSED

    def __init__(self, home: Any, timeout_s: float = 10.0) -> None:
        pass

    def post(self, path: str, body: Any = None) -> Any:
        return {}

    def get(self, path: str) -> Any:
        return {"state": "failed", "error": self.error}


def daemon_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "identity.json").write_text(json.dumps({"peer_id": PEER}))
    return home


def test_a_refused_get_names_the_grant_the_holder_can_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = daemon_home(tmp_path)
    monkeypatch.setattr(cli_data, "ApiClient", RefusingDaemon)
    result = run("get", DATASET, "--out", str(tmp_path / "o"), "--home", str(home))
    assert result.exit_code == 1
    assert REFUSED in result.output
    assert f"`idlegrid data grant {DATASET} {PEER}`" in result.output


def test_a_get_that_failed_otherwise_gets_no_grant_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = daemon_home(tmp_path)
    monkeypatch.setattr(RefusingDaemon, "error", f"{DATASET[:12]}: no source serves it to us "
                        "(12D3Ko..NASuq: no answer)")  # fmt: skip
    monkeypatch.setattr(cli_data, "ApiClient", RefusingDaemon)
    result = run("get", DATASET, "--out", str(tmp_path / "o"), "--home", str(home))
    assert result.exit_code == 1 and "no answer" in result.output
    assert "data grant" not in result.output


def test_a_refused_get_without_a_daemon_says_its_key_cannot_be_granted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*_: Any, **__: Any) -> Any:
        raise FetchFailed(REFUSED)

    monkeypatch.setattr(commands, "get_dataset", refused)
    result = run("get", DATASET, "--out", str(tmp_path / "o"), "--home", str(tmp_path / "plain"),
                 "--from", f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}")  # fmt: skip
    assert result.exit_code == 1 and REFUSED in result.output
    assert "throwaway key" in result.output
    assert f"`idlegrid data grant {DATASET} '*'`" in result.output
