"""A libp2p host with a life cycle that releases everything it took.

py-libp2p 0.8.1 needs help in several places (see /work/shared/notes/libp2p.md). Each point
below has a regression test in ``tests/p2p/test_host.py``:

* Leaving ``host.run()`` leaves the TCP listener accepting, and its cleanup is not shielded.
  :func:`open_host` closes the host itself, shielded and bounded, while ``run()`` is still
  running (its own exit cancels connection tasks mid-close, leaving sockets open), and then
  closes any socket the library lost track of (:mod:`p2p.transport`).
* The library closes connections one by one with 0.2 s of sleeps each; we close them together.
* ``run()`` yields inside nurseries, so an error in the caller's block would come out wrapped
  in an ExceptionGroup; :func:`open_host` hands a lone error back as itself.
* The dial loop waits a fixed 250 ms for a second connection unless the per-peer limit is 1.
* By default the host also offers TLS, SECIO and *plaintext* security, and Mplex. We offer
  exactly Noise and Yamux, over TCP.
* An exception escaping a stream handler cancels the whole swarm (and the caller's block), so
  every handler registered through :meth:`Host.set_stream_handler` runs inside a guard.
* A failed dial puts the peer in a 60 s negative cache; an explicit :meth:`Host.connect` is a
  deliberate retry, so it clears that entry first.
* The TCP listener sets SO_REUSEPORT, so a second node on a used port would start and share
  it; a failed listen is only logged. We probe fixed ports first and check every address got
  a listener, raising :class:`ListenError` otherwise.
* QUIC is off unless ``quic=True`` (slow in this library; see :mod:`p2p.quic`).
* The library has no per-peer block list (its connection gate filters IP addresses only):
  :mod:`p2p.gate` adds one, enforced on every dial, connection and stream.
* Opening a stream waits for the multistream header's echo before proposing the protocol:
  :mod:`p2p.multiselect` sends both at once, one round trip less per stream (its own tests).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, ITransport
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p import multiselect, yamux_events, yamux_window
from p2p.gate import Block, PeerGate, install_gate
from p2p.quic import is_quic, quic_transport, quic_twins
from p2p.transport import TrackedTCP

logger = logging.getLogger(__name__)

SEED_LEN: Final = 32
DEFAULT_LISTEN: Final = ("/ip4/127.0.0.1/tcp/0",)
DEFAULT_MAX_CONNECTIONS: Final = 128
# Closing is bounded: a wedged peer must not keep a node from shutting down.
CLOSE_TIMEOUT_S: Final = 5.0

StreamHandler = Callable[[INetStream], Awaitable[None]]


class ListenError(OSError):
    """A listen address could not be bound (in use, malformed, or not TCP)."""


class DialError(ConnectionError):
    """A peer could not be reached, or answered with another identity."""


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed.

    The seed is the one ``nacl.signing.SigningKey(seed)`` takes, so the key that signs our
    messages and the key behind our peer id are one identity.

    Raises:
        ValueError: If ``seed`` is not 32 bytes. (libp2p would silently generate a random key
            for an empty seed.)
    """
    if len(seed) != SEED_LEN:
        raise ValueError(f"an Ed25519 seed is {SEED_LEN} bytes, got {len(seed)}")
    return create_new_key_pair(bytes(seed))


class Host:
    """A running libp2p host, addressed by base58 peer ids and multiaddr strings.

    Made only by :func:`open_host`, which owns its life cycle. ``libp2p`` exposes the raw
    library host for layers (gossip, DHT) that need the library's own API.
    """

    def __init__(self, raw: IHost, gate: PeerGate) -> None:
        self._raw = raw
        self.peer_id: Final[str] = raw.get_id().to_base58()
        self.gate: Final = gate

    @property
    def libp2p(self) -> IHost:
        """The library host, for protocols built on the library's own API."""
        return self._raw

    @property
    def addrs(self) -> list[str]:
        """Where this host listens, with the ports the OS chose and ``/p2p/<peer id>``.

        These are the bound addresses, not observed ones: ``0.0.0.0`` stays ``0.0.0.0``.
        """
        suffix = f"/p2p/{self.peer_id}"
        return [str(addr) + suffix for addr in self._raw.get_transport_addrs()]

    async def connect(self, addr: str) -> str:
        """Connect to the peer at ``addr`` (which must end in ``/p2p/<peer id>``).

        Returns:
            The peer id, once the connection is secured and multiplexed.

        Raises:
            ValueError: If ``addr`` is not a multiaddr ending in ``/p2p/<peer id>``.
            DialError: If no connection could be made (Noise also fails here when the peer
                holds another key than the id in ``addr``).
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as error:
            raise ValueError(f"not a multiaddr with /p2p/<peer id>: {addr!r}") from error
        if info.peer_id == self._raw.get_id():
            raise ValueError("refusing to dial ourselves")
        if self.gate.blocked(info.peer_id.to_base58()):
            raise DialError(f"not dialling {addr}: the peer is blocked")
        # The library refuses to redial a peer for 60 s after a failed dial; an explicit
        # connect is a deliberate retry (the peer may have just come up).
        negative_cache = getattr(self._raw.get_network(), "_negative_peer_cache", None)
        if negative_cache is not None:
            negative_cache.evict(str(info.peer_id))
        try:
            await self._raw.connect(info)
        except trio.Cancelled:
            raise
        except Exception as error:
            raise DialError(f"cannot connect to {addr}: {error}") from error
        return info.peer_id.to_base58()

    def connected_peers(self) -> list[str]:
        """Peer ids with at least one open connection."""
        network = self._raw.get_network()
        return [peer.to_base58() for peer, conns in network.connections.items() if conns]

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` (a no-op if there is none).

        Its addresses are forgotten too, so the library's auto-connector does not redial it.
        """
        peer = ID.from_base58(peer_id)
        await self._raw.disconnect(peer)
        self._raw.get_peerstore().clear_addrs(peer)

    async def block(self, block: Block) -> None:
        """Blocks ``block.peer_id`` (see :mod:`p2p.gate`) and closes its connections now."""
        self.gate.block(block)
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            try:
                await self.disconnect(block.peer_id)
            except Exception:  # the library's teardown can raise; the gate holds regardless
                logger.warning("disconnecting a blocked peer failed", exc_info=True)

    def unblock(self, peer_id: str, source: str) -> bool:
        """Lifts ``source``'s block on ``peer_id`` (False if none); it is dialled as usual."""
        negative_cache = getattr(self._raw.get_network(), "_negative_peer_cache", None)
        if negative_cache is not None:
            negative_cache.evict(peer_id)
        return self.gate.unblock(peer_id, source)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve ``protocol`` with ``handler``, one call per inbound stream.

        An exception escaping a raw libp2p handler cancels the whole swarm, so the handler
        runs inside a guard that logs the exception and resets the stream instead. A stream
        from a blocked peer is reset before the handler sees it.
        """
        self._raw.set_stream_handler(TProtocol(protocol), _guarded(protocol, handler, self.gate))

    def remove_stream_handler(self, protocol: str) -> None:
        """Stop serving ``protocol``; new streams for it are refused during negotiation."""
        self._raw.remove_stream_handler(TProtocol(protocol))

    async def new_stream(self, peer_id: str, protocol: str) -> INetStream:
        """Open a stream to ``peer_id`` speaking ``protocol`` (dialing if not connected).

        Raises:
            DialError: If there is no connection and none can be made, the peer is blocked
                (it is never dialled, as by :meth:`connect`), or it does not speak
                ``protocol``.
        """
        if self.gate.blocked(peer_id):
            raise DialError(f"not opening {protocol} to {peer_id}: the peer is blocked")
        try:
            return await self._raw.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
        except trio.Cancelled:
            raise
        except Exception as error:
            raise DialError(f"cannot open {protocol} to {peer_id}: {error}") from error


def _shielded(timeout_s: float) -> trio.CancelScope:
    """A scope that outside cancellation cannot interrupt, bounded by its own deadline.

    (``trio.move_on_after(..., shield=True)`` would do, but the trio-typing stubs that
    libp2p pulls in shadow trio's own annotations and do not know the argument.)
    """
    return trio.CancelScope(deadline=trio.current_time() + timeout_s, shield=True)


def _guarded(protocol: str, handler: StreamHandler, gate: PeerGate) -> StreamHandler:
    async def guarded(stream: INetStream) -> None:
        if gate.blocked(stream.muxed_conn.peer_id.to_base58()):
            with _shielded(CLOSE_TIMEOUT_S):
                await stream.reset()
            return
        try:
            await handler(stream)
        except Exception:
            # Our bug (or an unhandled peer error): cost this stream, never the host.
            logger.exception("stream handler for %s failed", protocol)
            with _shielded(CLOSE_TIMEOUT_S):
                await stream.reset()

    return guarded


@asynccontextmanager
async def open_host(
    seed: bytes,
    listen: Sequence[str] = DEFAULT_LISTEN,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    quic: bool = False,
) -> AsyncIterator[Host]:
    """Run a TCP + Noise + Yamux libp2p host for the duration of the ``async with`` block.

    On exit (normal, exception or cancellation) the host is closed under a shield, bounded
    by :data:`CLOSE_TIMEOUT_S`: connections, listeners and their sockets are released before
    this returns.

    Args:
        seed: The 32-byte Ed25519 seed of the node's identity.
        listen: Multiaddrs to listen on; port 0 picks a free port (see :attr:`Host.addrs`).
        max_connections: Total connection cap (inbound and outbound together).
        quic: Also run QUIC: on the ``/udp/<port>/quic-v1`` addresses in ``listen``, or, if
            there are none, beside each TCP address (see :func:`p2p.quic.quic_twins`).

    Raises:
        ValueError: A bad seed, listen address or ``max_connections``.
        ListenError: An address could not be bound.
    """
    listen_addrs = _parse_listen(listen, quic)
    transport = TrackedTCP()
    key_pair = key_pair_from_seed(seed)
    transports: list[ITransport] = [transport]
    if quic:
        transports.append(quic_transport(key_pair, max_connections))
    raw = _build_host(key_pair, listen_addrs, max_connections, transports)
    gate = PeerGate(lambda: int(time.time() * 1000))
    install_gate(raw.get_network(), gate)
    unwrapped: BaseException | None = None
    try:
        async with raw.run(listen_addrs=listen_addrs):
            try:
                _check_listening(raw, listen_addrs)
                yield Host(raw, gate)
            finally:
                # Close while run() is still running: its own exit cancels the connection
                # tasks mid-close, and a connection whose close was interrupted is marked
                # closed without its socket being closed (left to the garbage collector).
                await _close(raw, transport)
    except BaseExceptionGroup as group:
        # run() yields inside its nurseries, so even an error raised in the caller's own
        # block comes out wrapped; hand a lone error back as itself (raised below, outside
        # this handler, so that its own cause and context stay as they were).
        unwrapped = _sole_leaf(group)
        if unwrapped is group:
            raise
    finally:
        await _close(raw, transport)  # idempotent; covers a failure inside run() itself
    if unwrapped is not None:
        raise unwrapped


async def _close(raw: IHost, transport: TrackedTCP) -> None:
    with _shielded(CLOSE_TIMEOUT_S) as scope:
        # The library closes connections one after another with two 100 ms sleeps each
        # (0.2 s per peer, 20 s for 100 peers); closing them together first bounds it.
        async with trio.open_nursery() as nursery:
            for conns in list(raw.get_network().connections.values()):
                for conn in list(conns):
                    nursery.start_soon(_close_connection, conn)
        await raw.close()
        # Sockets of connections whose close a cancellation interrupted (see p2p.transport).
        await transport.close_connections()
    if scope.cancelled_caught:
        logger.warning("libp2p host did not close within %.1f s", CLOSE_TIMEOUT_S)


async def _close_connection(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception:
        logger.warning("error closing a libp2p connection", exc_info=True)


def check_listen(listen: Sequence[str]) -> None:
    """Raises what :func:`open_host` would for these TCP listen addresses, before any host
    starts, so a command can name the flag at fault.

    Raises:
        ValueError: an address is malformed or not /ip4|ip6/<ip>/tcp/<port>.
        ListenError: a fixed port is already bound.
    """
    _parse_listen(listen)


def _parse_listen(listen: Sequence[str], quic: bool = False) -> list[multiaddr.Multiaddr]:
    if isinstance(listen, str):
        raise TypeError("listen is a sequence of multiaddrs, not one string")
    tcp, udp = [], []
    for text in listen:
        try:
            addr = multiaddr.Multiaddr(text)
        except Exception as error:
            raise ValueError(f"bad listen multiaddr {text!r}: {error}") from error
        names = [proto.name for proto in addr.protocols()]
        if quic and is_quic(addr):
            udp.append(addr)
            continue
        if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
            also = " or /udp/<port>/quic-v1 with QUIC on" if not quic else ""
            raise ValueError(f"listen address must be /ip4|ip6/<ip>/tcp/<port>{also}: {text!r}")
        _refuse_port_in_use(addr)
        tcp.append(addr)
    if quic and not udp:
        udp = quic_twins(tcp)
    return tcp + udp


def _refuse_port_in_use(addr: multiaddr.Multiaddr) -> None:
    """Raise :class:`ListenError` if a fixed port is already bound.

    The library's listener sets SO_REUSEPORT, so a second node on the same port would start
    "successfully" and the kernel would split inbound connections between the two. A probe
    bind without SO_REUSEPORT sees the port as taken. It does set SO_REUSEADDR, as the library
    does, so that connections of a previous run lingering in TIME_WAIT do not block a restart.
    """
    port = int(addr.value_for_protocol("tcp"))
    if port == 0:
        return
    family = socket.AF_INET6 if addr.protocols()[0].name == "ip6" else socket.AF_INET
    ip = addr.value_for_protocol(addr.protocols()[0].name)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ListenError(errno.EADDRINUSE, f"{addr} is already in use") from error
            raise ListenError(error.errno, f"cannot listen on {addr}: {error}") from error


def _build_host(
    key_pair: KeyPair,
    listen_addrs: Sequence[multiaddr.Multiaddr],
    max_connections: int,
    transports: Sequence[ITransport],
) -> IHost:
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    yamux_window.install()
    yamux_events.install()
    config = ConnectionConfig(
        max_connections=max_connections,
        # The library validates min <= low <= high <= max; its defaults assume 300.
        min_connections=0,
        low_watermark=0,
        high_watermark=max_connections,
        # With the default of 3 the dial loop waits 250 ms for a second connection to the
        # same peer before returning; one connection per peer is all we use.
        max_connections_per_peer=1,
    )
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    raw = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=list(transports),
        listen_addrs=listen_addrs,
        connection_config=config,
    )
    multiselect.install(raw)
    return raw


def _check_listening(raw: IHost, listen_addrs: Sequence[multiaddr.Multiaddr]) -> None:
    listeners = raw.get_network().listeners
    missing = [str(addr) for addr in listen_addrs if str(addr) not in listeners]
    if missing:
        raise ListenError(errno.EADDRNOTAVAIL, f"could not listen on {', '.join(missing)}")


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside ``group`` (however deeply nested), else ``group`` itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return group
        leaf = leaf.exceptions[0]
    return leaf
