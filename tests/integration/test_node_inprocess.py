"""A node run inside the test's trio loop: API guards, and nothing leaked after shutdown."""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from config import Settings
from config.schema import NodeSettings, P2pSettings
from node import identity
from node.daemon import NodeContext, run_node
from node.home import Home, NodeLock
from tests.resources import all_tasks, open_fds


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    return home


def settings(*roles: str) -> Settings:
    return Settings(
        node=NodeSettings(roles=roles or ("requester",)),
        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",)),
    )


@pytest.fixture
async def running(home: Home) -> AsyncIterator[NodeContext]:
    keys = identity.load(home, lambda: None)
    async with trio.open_nursery() as nursery:
        ctx = await nursery.start(run_node, home, settings("worker", "sentry"), keys)
        yield ctx
        nursery.cancel_scope.cancel()


def call(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def api(ctx: NodeContext, path: str, **headers: str) -> tuple[int, dict[str, object]]:
    return await trio.to_thread.run_sync(call, ctx.api_port, path, headers)


async def test_status_needs_the_token(running: NodeContext) -> None:
    token = running.home.read_token()
    code, body = await api(running, "/v1/status", Authorization=f"Bearer {token}")
    assert code == 200
    assert body["peer_id"] == running.keys.peer_id
    assert body["roles"] == ["worker", "sentry"]
    assert (await api(running, "/v1/status"))[0] == 401
    assert (await api(running, "/v1/status", Authorization="Bearer nope"))[0] == 401
    assert (await api(running, "/v1/nothing", Authorization=f"Bearer {token}"))[0] == 404


async def test_non_loopback_host_header_is_refused(running: NodeContext) -> None:
    token = running.home.read_token()
    code, body = await api(
        running, "/v1/status", Authorization=f"Bearer {token}", Host="evil.example:80"
    )
    assert code == 403
    assert "loopback" in str(body["error"])


async def test_api_json_written_when_up_and_removed_after(home: Home) -> None:
    keys = identity.load(home, lambda: None)
    async with trio.open_nursery() as nursery:
        ctx = await nursery.start(run_node, home, settings(), keys)
        info = json.loads(home.api.read_text())
        assert info == {"host": "127.0.0.1", "port": ctx.api_port, "pid": os.getpid()}
        nursery.cancel_scope.cancel()
    assert not home.api.exists()


async def test_start_stop_cycles_leak_nothing(home: Home) -> None:
    """Twenty start/stop cycles: no extra threads, file descriptors or trio tasks remain."""
    keys = identity.load(home, lambda: None)
    lock = NodeLock(home)

    async def cycle() -> None:
        lock.acquire()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_node, home, settings("worker"), keys)
                nursery.cancel_scope.cancel()
        finally:
            lock.release()

    await cycle()  # warm-up: first-use caches (trio's thread cache, imports) are not leaks
    threads, fds = threading.active_count(), open_fds()
    tasks = all_tasks()
    for _ in range(20):
        await cycle()
    # at most as many: an idle worker thread from an earlier test may retire meanwhile
    assert threading.active_count() <= threads
    assert open_fds() <= fds
    assert all_tasks() == tasks
