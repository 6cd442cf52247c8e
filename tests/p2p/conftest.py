"""Fixtures shared by the p2p tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from p2p.host import Host, open_host


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Host, Host]]:
    """Two real hosts on 127.0.0.1, the first (client) connected to the second (server)."""
    async with open_host(bytes(range(32))) as client, open_host(bytes(range(1, 33))) as server:
        await client.connect(server.addrs[0])
        yield client, server
