"""QUIC as a second transport, off unless asked for (``p2p.quic``).

py-libp2p 0.8.1's QUIC connects (its own TLS 1.3 and stream multiplexing, no Noise or Yamux)
but moves only 1-3 MB/s, CPU-bound in pure-Python packet handling, against 80-110 MB/s for
TCP + Noise + Yamux (see /work/shared/notes/libp2p.md). It is here for networks where only
UDP gets through, not for bulk data. Note that the library ranks QUIC above TCP when it knows
both addresses of a peer, so two nodes that both enable it will usually talk over QUIC.

Each TCP listen address gets a QUIC twin on the same IP and port number (UDP), or on a free
port when the TCP port is 0, unless the QUIC addresses are listed explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import multiaddr
from libp2p.crypto.keys import KeyPair
from libp2p.transport.quic.config import QUICTransportConfig
from libp2p.transport.quic.transport import QUICTransport

QUIC_SUFFIX = "quic-v1"


def protocol_names(addr: multiaddr.Multiaddr) -> list[str]:
    return [proto.name for proto in addr.protocols()]


def is_quic(addr: multiaddr.Multiaddr) -> bool:
    """``/ip4|ip6/<ip>/udp/<port>/quic-v1``, the only QUIC form we listen on."""
    names = protocol_names(addr)
    return len(names) == 3 and names[0] in ("ip4", "ip6") and names[1:] == ["udp", QUIC_SUFFIX]


def quic_twins(tcp_addrs: Sequence[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """The QUIC address beside each ``/ipX/<ip>/tcp/<port>``: same IP, same port number."""
    out = []
    for addr in tcp_addrs:
        family = protocol_names(addr)[0]
        ip = addr.value_for_protocol(family)
        port = addr.value_for_protocol("tcp")
        out.append(multiaddr.Multiaddr(f"/{family}/{ip}/udp/{port}/{QUIC_SUFFIX}"))
    return out


def quic_transport(key_pair: KeyPair, max_connections: int) -> QUICTransport:
    """A QUIC transport for the node's identity (its TLS certificate carries the peer id)."""
    config = QUICTransportConfig(max_connections=max_connections)
    return QUICTransport(key_pair.private_key, config)
