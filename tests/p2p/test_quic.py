"""p2p.quic: two real hosts on 127.0.0.1 connect and talk over QUIC when it is turned on."""

from __future__ import annotations

import gc
import threading

import pytest
import trio

from p2p import reqresp
from p2p.host import Host, open_host
from tests.resources import all_tasks, open_fds, task_names, tasks_down_to

SEED_A, SEED_B = bytes(range(32)), bytes(range(100, 132))
PROTO = "/idlegrid/test-quic/1"
TIMEOUT_S = 20


def quic_addr(host: Host) -> str:
    return next(a for a in host.addrs if "/quic-v1/" in a)


async def echo(peer_id: str, payload: object) -> object:
    return {"from": peer_id, "payload": payload}


async def test_two_hosts_connect_and_request_over_quic() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A, quic=True) as a, open_host(SEED_B, quic=True) as b:
            assert any("/tcp/" in addr for addr in b.addrs)  # TCP stays on beside QUIC
            assert await a.connect(quic_addr(b)) == b.peer_id
            conns = a.libp2p.get_network().connections[b.libp2p.get_id()]
            assert len(conns) == 1
            remote = [str(m) for m in conns[0].get_transport_addresses()]
            assert remote and all("/quic-v1" in m for m in remote), remote
            reqresp.serve(b, PROTO, echo)
            reply = await reqresp.request(a, b.peer_id, PROTO, b"x" * 100_000)
            assert reply == {"from": a.peer_id, "payload": b"x" * 100_000}


async def test_explicit_quic_listen_address_is_used_as_given() -> None:
    with trio.fail_after(TIMEOUT_S):
        listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        async with open_host(SEED_A, listen, quic=True) as a:
            assert sum("/quic-v1/" in addr for addr in a.addrs) == 1


async def test_quic_address_refused_while_quic_is_off() -> None:
    with pytest.raises(ValueError, match="quic-v1 with QUIC on"):
        async with open_host(SEED_A, ["/ip4/127.0.0.1/udp/0/quic-v1"]):
            pass


async def test_tcp_only_host_cannot_be_reached_on_a_quic_address() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A, quic=True) as a, open_host(SEED_B) as b:
            with pytest.raises(Exception, match="cannot connect"):
                await b.connect(quic_addr(a))
            assert await b.connect(next(x for x in a.addrs if "/tcp/" in x)) == a.peer_id


async def test_cycles_with_quic_leak_no_fds_threads_or_tasks() -> None:
    async def cycle() -> None:
        async with open_host(SEED_A, quic=True) as a, open_host(SEED_B, quic=True) as b:
            await a.connect(quic_addr(b))

    with trio.fail_after(60):
        await cycle()  # warm-up: imports, trio's thread cache
        gc.collect()
        gc.disable()  # a socket left to the garbage collector must count as a leak
        try:
            fds, threads, tasks = open_fds(), threading.active_count(), all_tasks()
            for _ in range(5):
                await cycle()
            leaked_fds = open_fds() - fds
        finally:
            gc.enable()
        assert leaked_fds <= 0
        assert threading.active_count() <= threads
        assert await tasks_down_to(tasks) <= tasks, task_names()  # CI once saw one still draining
