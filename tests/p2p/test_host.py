"""p2p.host: identity, connecting, and a life cycle that releases everything.

Several tests pin a py-libp2p 0.8.1 quirk that ``p2p.host`` works around (named in each
docstring); a library upgrade that changes the quirk fails the ``test_library_*`` test, so the
workaround can be reviewed rather than silently kept or silently broken.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import threading
from collections.abc import Iterator

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from nacl.signing import SigningKey

import p2p.host
from consensus.peer_id import peer_id_from_public_key
from p2p.host import DialError, Host, ListenError, open_host
from tests.resources import all_tasks, open_fds

SEED_A = bytes(range(32))
SEED_B = bytes(range(100, 132))
TIMEOUT_S = 20


def tcp_port(host: Host) -> int:
    return int(multiaddr.Multiaddr(host.addrs[0]).value_for_protocol("tcp"))


async def port_accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """A socket the library forgets to close is only freed by the garbage collector."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_two_hosts_connect_and_see_each_other() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a, open_host(SEED_B) as b:
            assert await a.connect(b.addrs[0]) == b.peer_id
            assert a.connected_peers() == [b.peer_id]
            assert a.peer_id != b.peer_id


async def test_peer_id_is_the_nacl_signing_key_identity() -> None:
    verify_key = bytes(SigningKey(SEED_A).verify_key)
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            assert a.peer_id == ID.from_pubkey(Ed25519PublicKey.from_bytes(verify_key)).to_base58()
            assert a.peer_id == peer_id_from_public_key(verify_key)
            assert a.peer_id.startswith("12D3KooW")


@pytest.mark.parametrize("seed", [b"", b"\x01" * 31, b"\x01" * 33])
async def test_seed_must_be_32_bytes(seed: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        async with open_host(seed):
            pass


async def test_addrs_carry_the_bound_port_and_peer_id() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            assert len(a.addrs) == 1
            assert a.addrs[0].startswith("/ip4/127.0.0.1/tcp/")
            assert a.addrs[0].endswith(f"/p2p/{a.peer_id}")
            assert tcp_port(a) != 0
            assert await port_accepts(tcp_port(a))


async def test_only_noise_and_yamux_are_offered() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            upgrader = a.libp2p.get_network().upgrader
            assert list(upgrader.security_multistream.transports) == ["/noise"]
            assert list(upgrader.muxer_multistream.transports) == ["/yamux/1.0.0"]
            assert a.libp2p.get_network().connection_config.max_connections_per_peer == 1


def test_library_default_also_offers_plaintext_and_mplex() -> None:
    """Quirk: a default ``new_host`` offers TLS, SECIO and plaintext, and Mplex."""
    upgrader = new_host().get_network().upgrader
    assert "/plaintext/2.0.0" in upgrader.security_multistream.transports
    assert "/mplex/6.7.0" in upgrader.muxer_multistream.transports


async def test_close_releases_the_port() -> None:
    """Quirk: leaving the library's ``host.run()`` leaves the listener accepting."""
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            port = tcp_port(a)
        assert not await port_accepts(port)


async def test_library_run_alone_leaves_the_port_open() -> None:
    """The quirk behind the test above, seen through the library's own API."""
    raw = new_host(key_pair=p2p.host.key_pair_from_seed(SEED_A))
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    with trio.fail_after(TIMEOUT_S):
        try:
            async with raw.run(listen_addrs=listen):
                port = int(raw.get_transport_addrs()[0].value_for_protocol("tcp"))
            assert await port_accepts(port)
        finally:
            await raw.close()
        assert not await port_accepts(port)


async def test_twenty_cycles_leak_no_fds_threads_or_tasks() -> None:
    """Quirk: a connection whose close the library's own exit interrupts keeps its socket."""

    async def cycle() -> None:
        async with open_host(SEED_A) as a, open_host(SEED_B) as b:
            await a.connect(b.addrs[0])

    with trio.fail_after(60):
        await cycle()  # warm-up: imports, trio's thread cache
        with gc_paused():
            fds, threads, tasks = open_fds(), threading.active_count(), all_tasks()
            for _ in range(20):
                await cycle()
            # at most as many: an idle worker thread from an earlier test may retire meanwhile
            assert open_fds() <= fds
            assert threading.active_count() <= threads
            assert all_tasks() == tasks


async def test_cancellation_closes_everything() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_B) as b:
            await trio.lowlevel.checkpoint()  # warm-up
        with gc_paused():
            fds, tasks = open_fds(), all_tasks()
            ports: list[int] = []
            with trio.CancelScope() as scope:
                async with open_host(SEED_A) as a, open_host(SEED_B) as b:
                    await a.connect(b.addrs[0])
                    ports += [tcp_port(a), tcp_port(b)]
                    scope.cancel()
                    await trio.sleep_forever()  # cancelled at once
            assert scope.cancelled_caught
            assert (open_fds(), all_tasks()) == (fds, tasks)
        assert not any([await port_accepts(port) for port in ports])


async def test_many_connections_close_together(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Quirk: the library closes connections one by one with 0.2 s of sleeps each.

    Twenty in sequence (4 s) would overrun a 2 s close deadline and leave sockets open.
    """
    monkeypatch.setattr(p2p.host, "CLOSE_TIMEOUT_S", 2.0)
    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(open_host(bytes([i]) * 32)) for i in range(20)]
        with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.WARNING, logger="p2p.host"):
            async with open_host(SEED_A) as hub:
                for peer in peers:
                    await hub.connect(peer.addrs[0])
                assert len(hub.connected_peers()) == 20
                port = tcp_port(hub)
            assert "did not close" not in caplog.text
            assert not await port_accepts(port)


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    """Quirk: run() yields inside nurseries, so errors would come out in an ExceptionGroup."""
    with trio.fail_after(TIMEOUT_S), pytest.raises(KeyError, match="mine"):
        async with open_host(SEED_A):
            raise KeyError("mine")


async def test_guarded_handler_error_costs_one_stream_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(stream: INetStream) -> None:
        raise RuntimeError("handler bug")

    async def echo(stream: INetStream) -> None:
        await stream.write(await stream.read(5))
        await stream.close()

    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a, open_host(SEED_B) as b:
            b.set_stream_handler("/test/buggy/1", buggy)
            b.set_stream_handler("/test/echo/1", echo)
            await a.connect(b.addrs[0])
            with caplog.at_level(logging.ERROR, logger="p2p.host"):
                stream = await a.new_stream(b.peer_id, "/test/buggy/1")
                with pytest.raises((StreamReset, StreamEOF)):
                    await stream.read(1)
            stream = await a.new_stream(b.peer_id, "/test/echo/1")
            await stream.write(b"hello")
            assert await stream.read(5) == b"hello"
    assert "handler bug" in caplog.text


async def test_library_handler_error_brings_the_host_down() -> None:
    """Quirk: an exception escaping a raw libp2p stream handler cancels the whole swarm."""

    async def buggy(stream: INetStream) -> None:
        raise RuntimeError("raw handler bug")

    with trio.fail_after(TIMEOUT_S), pytest.raises(RuntimeError, match="raw handler bug"):
        async with open_host(SEED_B) as b:
            b.libp2p.set_stream_handler(TProtocol("/test/raw/1"), buggy)
            async with open_host(SEED_A) as a:
                await a.connect(b.addrs[0])
                await a.new_stream(b.peer_id, "/test/raw/1")
                await trio.Event().wait()  # until b's crash cancels this block


async def test_second_host_on_a_used_port_is_refused() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            with pytest.raises(ListenError, match="in use"):
                async with open_host(SEED_B, [f"/ip4/127.0.0.1/tcp/{tcp_port(a)}"]):
                    pass


async def test_library_lets_two_hosts_share_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quirk: the TCP listener sets SO_REUSEPORT, so a second bind "succeeds"."""
    monkeypatch.setattr(p2p.host, "_refuse_port_in_use", lambda addr: None)
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            port = tcp_port(a)
            async with open_host(SEED_B, [f"/ip4/127.0.0.1/tcp/{port}"]) as b:
                assert tcp_port(b) == port


async def test_restart_on_a_port_in_time_wait() -> None:
    """Our used-port probe must not refuse a port that only has TIME_WAIT leftovers."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the listening side closes first: its end goes to TIME_WAIT
            assert client.recv(1) == b""
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A, [f"/ip4/127.0.0.1/tcp/{port}"]) as a:
            assert tcp_port(a) == port


async def test_max_connections_is_enforced() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_host(SEED_A, max_connections=1) as a,
            open_host(SEED_B) as b,
            open_host(bytes(32)) as c,
        ):
            await a.connect(b.addrs[0])
            with pytest.raises(DialError):
                await a.connect(c.addrs[0])
            assert a.connected_peers() == [b.peer_id]
    with pytest.raises(ValueError, match="max_connections"):
        async with open_host(SEED_A, max_connections=0):
            pass


async def test_unbindable_address_raises() -> None:
    """Quirk: the library only logs a failed listen; we check every address got a listener."""
    with trio.fail_after(TIMEOUT_S), pytest.raises(ListenError):
        async with open_host(SEED_A, ["/ip4/192.0.2.1/tcp/0"]):  # TEST-NET-1, not ours
            pass


@pytest.mark.parametrize(
    "listen", [["/ip4/127.0.0.1/udp/0/quic-v1"], ["/dns4/localhost/tcp/0"], ["nonsense"]]
)
async def test_bad_listen_addresses_are_refused(listen: list[str]) -> None:
    with pytest.raises(ValueError, match="listen"):
        async with open_host(SEED_A, listen):
            pass


async def test_connect_right_after_a_failed_dial() -> None:
    """Quirk: a failed dial blocks the peer for 60 s; an explicit connect retries at once."""
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a:
            async with open_host(SEED_B) as b:
                addr, port = b.addrs[0], tcp_port(b)
            with pytest.raises(DialError):
                await a.connect(addr)
            with pytest.raises(SwarmException, match="negative cache"):
                await a.libp2p.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
            async with open_host(SEED_B, [f"/ip4/127.0.0.1/tcp/{port}"]) as b:
                assert await a.connect(addr) == b.peer_id


async def test_connect_checks_the_peer_id() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a, open_host(SEED_B) as b:
            impostor = b.addrs[0].replace(b.peer_id, a.peer_id)
            with pytest.raises(ValueError, match="ourselves"):
                await a.connect(impostor)
            with pytest.raises(ValueError, match="/p2p/"):
                await a.connect(b.addrs[0].split("/p2p/")[0])
            other = peer_id_from_public_key(bytes(SigningKey(bytes(32)).verify_key))
            with pytest.raises(DialError):
                await a.connect(b.addrs[0].replace(b.peer_id, other))
            assert a.connected_peers() == []


async def test_disconnect() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_host(SEED_A) as a, open_host(SEED_B) as b:
            await a.connect(b.addrs[0])
            await a.disconnect(b.peer_id)
            assert a.connected_peers() == []
            await a.disconnect(b.peer_id)  # no connection: a no-op
            with pytest.raises(DialError):  # addresses forgotten: no silent redial
                await a.new_stream(b.peer_id, "/test/echo/1")


def test_library_logger_does_not_propagate() -> None:
    """Quirk: importing libp2p detaches its loggers from ours (stderr via lastResort)."""
    assert logging.getLogger("libp2p").propagate is False
