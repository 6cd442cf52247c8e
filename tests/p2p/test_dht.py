"""p2p.dht between five real hosts on 127.0.0.1 connected in a chain (each knows two at most)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import trio

from p2p.dht import Dht, key_of, open_dht
from p2p.host import Host, open_host
from tests.resources import all_tasks

TIMEOUT_S = 30
Chain = tuple[list[Host], list[Dht]]


@pytest.fixture
async def chain() -> AsyncIterator[Chain]:
    """Five hosts, host i connected to host i+1 only, each running the DHT as a server."""
    async with AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(bytes([i]) * 32)) for i in range(5)]
        dhts = [await stack.enter_async_context(open_dht(h)) for h in hosts]
        for left, right in itertools.pairwise(hosts):
            await left.connect(right.addrs[0])
        for dht in dhts:
            await dht.add_connected()
        yield hosts, dhts


async def test_find_a_peer_never_met_and_connect_to_it(chain: Chain) -> None:
    hosts, dhts = chain
    first, last = hosts[0], hosts[-1]
    assert last.peer_id not in first.connected_peers()
    with trio.fail_after(TIMEOUT_S):
        addrs = await dhts[0].find_peer(last.peer_id)
        assert addrs and all(a.endswith(f"/p2p/{last.peer_id}") for a in addrs)
        assert await first.connect(addrs[0]) == last.peer_id


async def test_unknown_peer_is_not_found(chain: Chain) -> None:
    _, dhts = chain
    stranger = "12D3KooWMbbPVGsZYh3ChQjue712NHHGNybRRXwnuSpezYjGbCDS"
    with trio.fail_after(TIMEOUT_S):
        assert await dhts[0].find_peer(stranger) == []


async def test_providers_found_across_the_chain_once_each(chain: Chain) -> None:
    hosts, dhts = chain
    role = "/idlegrid/1/role/worker"
    with trio.fail_after(TIMEOUT_S):
        assert await dhts[4].provide(role)
        assert set(await dhts[0].find_providers(role)) == {hosts[4].peer_id}
        # The library answers from the records it holds once it holds any (dhts[0] now keeps
        # hosts[4]'s): a provider that comes later was never found.
        assert await dhts[3].provide(role)
        wanted = {hosts[4].peer_id, hosts[3].peer_id}
        while set(providers := await dhts[0].find_providers(role)) != wanted:
            assert set(providers) < wanted, providers  # a record still on its way: ask again
            await trio.sleep(0.05)  # a retry's pace; fail_after bounds the wait
        for peer_id, addrs in providers.items():
            assert len(addrs) == len(set(addrs)) >= 1  # merged: the library repeats providers
            assert all(a.endswith(f"/p2p/{peer_id}") for a in addrs)
        assert await dhts[0].find_providers("/idlegrid/1/role/nobody") == {}


async def test_a_client_that_found_a_provider_still_finds_the_next(chain: Chain) -> None:
    """A client holds no one's records but keeps the providers its lookups found, and the
    library then answered from those alone: a later provider was never found."""
    hosts, dhts = chain
    role = "/idlegrid/1/role/worker"
    async with open_host(bytes([9]) * 32) as host, open_dht(host, "client") as client:
        await host.connect(hosts[0].addrs[0])
        await client.add_connected()
        with trio.fail_after(TIMEOUT_S):
            assert await dhts[4].provide(role)
            assert set(await client.find_providers(role)) == {hosts[4].peer_id}
            assert await dhts[3].provide(role)
            wanted = {hosts[4].peer_id, hosts[3].peer_id}
            while set(providers := await client.find_providers(role)) != wanted:
                assert set(providers) < wanted, providers  # a record still on its way
                await trio.sleep(0.05)  # a retry's pace; fail_after bounds the wait


async def test_peers_closing_streams_log_no_warnings(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    _, dhts = chain
    caplog.set_level(logging.WARNING, logger="libp2p.kad_dht")
    with trio.fail_after(TIMEOUT_S):
        await dhts[2].provide("x")
        await dhts[0].find_providers("x")
    assert not [r for r in caplog.records if r.name.startswith("libp2p.kad_dht")]


def test_keys_are_sha256_multihashes() -> None:
    assert key_of("a").startswith("1220") and len(key_of("a")) == 68
    assert key_of("a") != key_of("b")


async def test_bad_mode_is_refused_and_closing_leaves_no_tasks() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(bytes(32)) as host:
            with pytest.raises(ValueError, match="one of server, client"):
                async with open_dht(host, "both"):
                    pass
            tasks = all_tasks()
            async with open_dht(host, "client") as dht:
                assert dht.mode == "client"
            assert all_tasks() <= tasks  # at most: a start-up task of the host may end meanwhile
