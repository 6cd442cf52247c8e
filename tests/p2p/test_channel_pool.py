"""p2p.channel_pool between two real hosts on 127.0.0.1: streams kept, never a request twice."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from p2p import channel_pool
from p2p.channel_pool import ChannelPool
from p2p.host import Host
from p2p.reqresp import RequestTimeout, serve

PROTO = "/idlegrid/test-pool/1"
LIMIT = 1 << 16
TIMEOUT_S = 20


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


async def test_requests_one_after_another_share_one_stream(pair: tuple[Host, Host]) -> None:
    client, server = pair
    handler = Counting()
    serve(server, PROTO, handler)
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        answers = [await ask(pool, server, n) for n in range(5)]
    assert answers == [{"n": n} for n in range(5)]
    assert pool.opened == 1


async def test_requests_at_once_go_on_streams_of_their_own(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, Counting())
    pool = ChannelPool(client)
    await ask(pool, server, -1)  # one stream kept: the first of the five takes it
    got: list[Any] = []

    async def one(n: int) -> None:
        got.append(await ask(pool, server, n))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(one, n)
    assert sorted(g["n"] for g in got) == [0, 1, 2, 3, 4]
    assert pool.opened == 5
    assert pool.idle((server.peer_id, PROTO, LIMIT)) == channel_pool.MAX_IDLE


async def test_a_slow_or_failed_request_holds_up_no_other(pair: tuple[Host, Host]) -> None:
    client, server = pair
    release = trio.Event()

    async def handler(peer_id: str, payload: Any) -> Any:
        if payload == "slow":
            await release.wait()
        return payload

    serve(server, PROTO, handler)
    pool = ChannelPool(client)
    await pool.request(server.peer_id, PROTO, "warm", timeout_s=5, max_bytes=LIMIT)
    failed = trio.Event()

    async def slow() -> None:
        with pytest.raises(RequestTimeout):
            await pool.request(server.peer_id, PROTO, "slow", timeout_s=0.5, max_bytes=LIMIT)
        failed.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()  # the slow one holds the kept stream
            fast = await pool.request(server.peer_id, PROTO, "fast", timeout_s=5, max_bytes=LIMIT)
            assert fast == "fast" and not failed.is_set()
        after = await pool.request(server.peer_id, PROTO, "after", timeout_s=5, max_bytes=LIMIT)
    release.set()
    assert after == "after"


async def test_a_stream_the_server_closed_is_replaced_before_writing(
    pair: tuple[Host, Host],
) -> None:
    client, server = pair
    handler = Counting()
    serve(server, PROTO, handler, idle_timeout_s=0.05)  # closes each stream once idle
    pool = ChannelPool(client)
    with trio.fail_after(TIMEOUT_S):
        await ask(pool, server, 1)
        [line] = pool._idle[(server.peer_id, PROTO, LIMIT)]
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
    assert pool.opened == 2  # the broken stream was dropped


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


async def test_idle_streams_are_closed_and_all_on_stop(
    pair: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, server = pair
    serve(server, PROTO, Counting())
    pool = ChannelPool(client)
    key = (server.peer_id, PROTO, LIMIT)
    monkeypatch.setattr(channel_pool, "IDLE_S", 0.05)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await ask(pool, server, 1)
            [first] = pool._idle[key]
            while pool.idle(key):
                await trio.sleep(0.01)  # the pruning is the event waited for
            assert first.channel.broken  # closed
            await ask(pool, server, 2)
            [second] = pool._idle[key]
            monkeypatch.setattr(channel_pool, "IDLE_S", 60.0)
            nursery.cancel_scope.cancel()
    assert second.channel.broken  # stopping closes every idle stream
    assert pool.opened == 2
