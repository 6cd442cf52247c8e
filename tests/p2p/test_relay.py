"""p2p.relay with three real hosts on 127.0.0.1: a relay, a target that listens on nothing (as
behind NAT) and reserves a slot on the relay, and a source that reaches it through the relay."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
import trio
from libp2p.relay.circuit_v2.protocol import DEFAULT_RELAY_LIMITS

from p2p import reqresp
from p2p.host import DialError, Host, open_host
from p2p.relay import Relay, open_relay

TIMEOUT_S = 30
PROTO = "/idlegrid/test-relay/1"


@dataclass
class Trio:
    relay: Host
    target: Host
    source: Host
    target_relay: Relay
    source_relay: Relay


@pytest.fixture
async def three() -> AsyncIterator[Trio]:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_host(b"r" * 32))
        target = await stack.enter_async_context(open_host(b"t" * 32, []))  # no listener at all
        source = await stack.enter_async_context(open_host(b"s" * 32))
        await stack.enter_async_context(open_relay(relay, hop=True, reserve=False))
        t = await stack.enter_async_context(open_relay(target, hop=False, reserve=True))
        s = await stack.enter_async_context(open_relay(source, hop=False, reserve=False))
        yield Trio(relay, target, source, t, s)


async def echo(peer_id: str, payload: object) -> object:
    return {"from": peer_id, "payload": payload}


async def test_target_behind_nat_is_reached_through_the_relay(
    three: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert three.target.addrs == []
    with trio.fail_after(TIMEOUT_S):
        await three.target.connect(three.relay.addrs[0])
        circuits = await three.target_relay.find_relays()
        assert circuits == [f"{three.relay.addrs[0]}/p2p-circuit/p2p/{three.target.peer_id}"]
        assert await three.source_relay.dial(circuits[0]) == three.target.peer_id
        reqresp.serve(three.target, PROTO, echo)
        reply = await reqresp.request(three.source, three.target.peer_id, PROTO, b"x" * 50_000)
        assert reply == {"from": three.source.peer_id, "payload": b"x" * 50_000}
    assert not [r for r in caplog.records if r.name.startswith("libp2p.relay")]


async def test_no_reservation_without_discover_relays(three: Trio) -> None:
    """Quirk: connecting to a relay reserves nothing; a dial through it fails with 204."""
    circuit = f"{three.relay.addrs[0]}/p2p-circuit/p2p/{three.target.peer_id}"
    with trio.fail_after(TIMEOUT_S):
        await three.target.connect(three.relay.addrs[0])
        with pytest.raises(DialError, match="204"):
            await three.source_relay.dial(circuit)


async def test_a_peer_that_is_no_relay_gives_no_circuit(three: Trio) -> None:
    with trio.fail_after(TIMEOUT_S):
        await three.target.connect(three.source.addrs[0])  # source does not relay
        assert await three.target_relay.find_relays() == []


async def test_library_swarm_drops_circuit_addresses(three: Trio) -> None:
    """Quirk: the host's own connect cannot use a /p2p-circuit address."""
    with trio.fail_after(TIMEOUT_S):
        await three.target.connect(three.relay.addrs[0])
        circuits = await three.target_relay.find_relays()
        with pytest.raises(DialError):
            await three.source.connect(circuits[0])


async def test_dial_refuses_a_plain_address(three: Trio) -> None:
    with pytest.raises(ValueError, match="not a circuit address"):
        await three.source_relay.dial(three.relay.addrs[0])


async def test_a_reservation_is_renewed_before_it_ends() -> None:
    """The library renews only an ended reservation, on a 5-minute sweep: the relay refused
    every dial to the target meanwhile. Here reservations live 3 s; the target keeps its
    reservation through three lives and stays reachable."""
    limits = dataclasses.replace(DEFAULT_RELAY_LIMITS, reservation_ttl=3)
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_host(b"r" * 32))
        target = await stack.enter_async_context(open_host(b"t" * 32, []))
        source = await stack.enter_async_context(open_host(b"s" * 32))
        await stack.enter_async_context(open_relay(relay, hop=True, reserve=False, limits=limits))
        t = await stack.enter_async_context(open_relay(target, hop=False, reserve=True))
        s = await stack.enter_async_context(open_relay(source, hop=False, reserve=False))
        with trio.fail_after(TIMEOUT_S):
            await target.connect(relay.addrs[0])
            [circuit] = await t.find_relays()
            first_end = time.time() + 3
            while time.time() < first_end + 4:  # past the first life's end, and the second's
                renew_in = await t.renew()
                assert renew_in is not None and renew_in <= 2
                await trio.sleep(renew_in)  # the node's relay loop waits the same way
            assert t.circuit_addrs() == [circuit]
            assert await s.dial(circuit) == target.peer_id


async def test_an_ended_reservation_is_not_announced(three: Trio) -> None:
    with trio.fail_after(TIMEOUT_S):
        await three.target.connect(three.relay.addrs[0])
        assert await three.target_relay.find_relays()
        discovery = three.target_relay._discovery
        assert discovery is not None
        [relay] = discovery.get_relays()
        info = discovery.get_relay_info(relay)
        assert info is not None
        info.reservation_expires_at = int(time.time()) - 1  # what an hour without renewal leaves
        assert three.target_relay.circuit_addrs() == []
