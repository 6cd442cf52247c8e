"""Pure protocol logic: messages, signing, market, proof-of-compute, settlement maths.

Nothing in this package performs I/O or reads a clock: time is passed in as ``now_ms``. It may
import only the standard library, msgpack, pynacl and blake3 (and eth-hash / eth-abi for keccak).
"""

from consensus.codec import DEFAULT_LIMITS, Limits
from consensus.envelope import (
    MAX_TTL_MS,
    Opened,
    ReplayGuard,
    new_nonce,
    open_envelope,
    seal,
    seal_body,
)
from consensus.errors import Invalid, Overloaded, Replayed
from consensus.kinds import DEFAULT_REGISTRY, Body, Hello, Ping, Registry, Wei
from consensus.peer_id import peer_id_from_public_key, public_key_from_peer_id

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_REGISTRY",
    "MAX_TTL_MS",
    "Body",
    "Hello",
    "Invalid",
    "Limits",
    "Opened",
    "Overloaded",
    "Ping",
    "Registry",
    "ReplayGuard",
    "Replayed",
    "Wei",
    "new_nonce",
    "open_envelope",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "seal",
    "seal_body",
]
