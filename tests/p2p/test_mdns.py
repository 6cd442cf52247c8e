"""p2p.mdns: two announcers on the loopback interface hear each other, through trio."""

from __future__ import annotations

import secrets
import threading

import pytest
import trio

from p2p.mdns import Found, interface_ipv4, open_mdns, parse_txt, txt_record

TIMEOUT_S = 20
A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
B = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"


C = "12D3KooWCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def net() -> str:
    """A network name of this test's own: other tests announce on the same loopback."""
    return f"t-{secrets.token_hex(6)}"


def addrs_of(peer: str, port: int) -> list[str]:
    return [f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"]


async def first_from(inbox: trio.MemoryReceiveChannel[Found], peer: str) -> Found:
    async for found in inbox:
        if found.peer_id == peer:
            return found
    raise AssertionError("channel closed")


def waiting(inbox: trio.MemoryReceiveChannel[Found]) -> set[str]:
    """The peers already reported and not yet read."""
    peers = set()
    while True:
        try:
            peers.add(inbox.receive_nowait().peer_id)
        except trio.WouldBlock:
            return peers


async def test_two_nodes_on_loopback_find_each_other() -> None:
    ours = net()
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_mdns(A, addrs_of(A, 1001), "lo", ours) as inbox_a,
            open_mdns(B, addrs_of(B, 1002), "127.0.0.1", ours) as inbox_b,
        ):
            assert (await first_from(inbox_a, B)).addrs == addrs_of(B, 1002)
            assert (await first_from(inbox_b, A)).addrs == addrs_of(A, 1001)


async def test_a_node_of_another_network_is_not_reported() -> None:
    ours, theirs = net(), net()
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_mdns(A, addrs_of(A, 1001), "lo", ours) as inbox_a,
            open_mdns(B, addrs_of(B, 1002), "lo", ours) as inbox_b,
            open_mdns(C, addrs_of(C, 1003), "lo", theirs) as inbox_c,
        ):
            # Each of ours has heard the other, so C's announcements, made as early, are in.
            await first_from(inbox_a, B)
            await first_from(inbox_b, A)
            assert C not in waiting(inbox_a) | waiting(inbox_b)
            assert not {A, B} & waiting(inbox_c)


async def test_closing_stops_zeroconf_threads() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_mdns(A, addrs_of(A, 1), "lo", net()):
            pass  # warm-up: trio's worker thread cache
        threads = threading.active_count()
        async with open_mdns(A, addrs_of(A, 1), "lo", net()):
            assert threading.active_count() > threads  # zeroconf's own threads
        assert threading.active_count() <= threads


def test_unknown_interface_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no IPv4 interface named 'nope0'"):
        interface_ipv4("nope0")
    with pytest.raises(ValueError, match=r"192\.0\.2\.250 is not an address of this machine"):
        interface_ipv4("192.0.2.250")


def test_txt_round_trip_and_peers_speak_for_one_id() -> None:
    addrs = [f"/ip4/10.0.0.1/tcp/4001/p2p/{A}", f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{A}"]
    assert parse_txt(txt_record(addrs, "main")) == Found(A, addrs, "main")
    assert parse_txt(txt_record([*addrs, f"/ip4/10.0.0.2/tcp/1/p2p/{B}"], "main")) is None
    assert parse_txt(txt_record(["/ip4/10.0.0.1/tcp/4001"], "main")) is None
    assert txt_record(["/ip4/1.2.3.4/tcp/1/p2p/" + "x" * 300], "t") == b"\x12idlegrid-network=t"


def test_a_plain_libp2p_record_names_no_network() -> None:
    entry = f"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{A}".encode()
    assert parse_txt(bytes([len(entry)]) + entry) == Found(A, [entry[8:].decode()], None)
