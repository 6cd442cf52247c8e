"""p2p.channel_pool between two real hosts on 127.0.0.1: streams reused, never a request twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from p2p import channel_pool
from p2p.channel_pool import ChannelPool
from p2p.host import Host, open_host
from p2p.reqresp import RequestTimeout, serve

PROTO = "/idlegrid/test-pool/1"
LIMIT = 1 << 16
TIMEOUT_S = 20


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Host, Host]]:
    async with open_host(bytes(range(32))) as client, open_host(bytes(range(1, 33))) as server:
        await client.connect(server.addrs[0])
        yield client, server


class Counting:
    """A handler that counts what it was asked, and can be told to hang."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.hang = False

    async def __call__(self, peer_id: str, payload: Any) -> Any:
        self.calls.append(payload)
        if self.hang:
            await trio.sleep_forever()
        return {"n": payload}


async def ask(pool: ChannelPool, server: Host, n: int, timeout_s: float = 5.0) -> Any:
    return await pool.request(server.peer_id, PROTO, n, timeout_s=timeout_s, max_bytes=LIMIT)


async def test_requests_share_one_stream(pair: tuple[Host, Host]) -> None:
    client, server = pair
    handler = Counting()
    serve(server, PROTO, handler)
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        answers = [await ask(pool, server, n) for n in range(5)]
    assert answers == [{"n": n} for n in range(5)]
    assert pool.opened == 1
    await pool.aclose()


async def test_concurrent_requests_queue_on_the_channel(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, Counting())
    pool = ChannelPool(client)
    await ask(pool, server, -1)  # the channel exists; the rest queue on it
    got: list[Any] = []

    async def one(n: int) -> None:
        got.append(await ask(pool, server, n))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(one, n)
    assert sorted(g["n"] for g in got) == [0, 1, 2, 3]
    assert pool.opened == 1


async def test_a_stream_the_server_closed_is_replaced_before_writing(
    pair: tuple[Host, Host],
) -> None:
    client, server = pair
    handler = Counting()
    serve(server, PROTO, handler, idle_timeout_s=0.05)  # closes each stream once idle
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        await ask(pool, server, 1)
        [line] = pool._lines.values()
        while not line.stream.muxed_stream.recv_closed:  # type: ignore[attr-defined]
            await trio.sleep(0.01)  # the server's idle timeout is the event waited for
        assert await ask(pool, server, 2) == {"n": 2}
    assert handler.calls == [1, 2]
    assert pool.opened == 2


async def test_a_request_that_breaks_is_not_resent(pair: tuple[Host, Host]) -> None:
    client, server = pair
    handler = Counting()
    serve(server, PROTO, handler)
    pool = ChannelPool(client)
    await ask(pool, server, 1)
    handler.hang = True
    with trio.fail_after(TIMEOUT_S), pytest.raises(RequestTimeout):
        await ask(pool, server, 2, timeout_s=0.3)
    handler.hang = False
    with trio.fail_after(TIMEOUT_S):
        assert await ask(pool, server, 3) == {"n": 3}
    assert handler.calls == [1, 2, 3]  # 2 reached the server once, and only once
    assert pool.opened == 2  # the broken channel was dropped


async def test_a_lost_connection_means_a_new_stream(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, Counting())
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        await ask(pool, server, 1)
        await client.disconnect(server.peer_id)
        await client.connect(server.addrs[0])
        assert await ask(pool, server, 2) == {"n": 2}
    assert pool.opened == 2


async def test_idle_channels_are_closed(
    pair: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, server = pair
    serve(server, PROTO, Counting())
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        await ask(pool, server, 1)
        [first] = pool._lines.values()
        monkeypatch.setattr(channel_pool, "IDLE_S", 0.0)
        await ask(pool, server, 2)
    assert first.channel.broken  # closed by the next request's pruning
    assert pool.opened == 2
