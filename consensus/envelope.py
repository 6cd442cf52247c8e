"""The signed envelope around every message between nodes.

Wire form, one msgpack array::

    [version: int, kind: str, body: bin, signer: bin(32), signature: bin(64)]

``body`` is the msgpack map of the kind's fields, kept as bytes so that the signature is checked
over exactly the bytes received and nothing is ever re-encoded to verify. The signature is
Ed25519 by ``signer`` over :func:`signed_bytes`.

:func:`open_envelope` checks, cheapest and least trusting first (each failure is ``Invalid``):

1. size, then strict decoding of the outer array only;
2. shape: five elements of the right types and sizes;
3. version supported, kind known to the registry;
4. the outer encoding is canonical (re-encoding gives the same bytes), so ``blake3(raw)`` is one
   id per logical message: nobody can relay a variant that dodges deduplication;
5. the signature; only a message that verifies gets its body decoded;
6. the body, strictly, into the kind's typed dataclass;
7. expiry within ``(now_ms, now_ms + max_ttl_ms]``, then the replay guard.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import blake3
import nacl.exceptions
import nacl.signing
import nacl.utils

from consensus.codec import DEFAULT_LIMITS, Limits, decode, encode, type_name
from consensus.errors import Expired, Invalid, Overloaded, Replayed
from consensus.kinds import NONCE_LEN, Body, Registry, to_wire
from consensus.peer_id import peer_id_from_public_key

VERSION = 1
SUPPORTED_VERSIONS = frozenset({VERSION})
DOMAIN = b"idlegrid/envelope/v1\x00"
SIGNER_LEN = 32
SIGNATURE_LEN = 64
MAX_TTL_MS = 60 * 60 * 1000
_OUTER_LEN = 5


@dataclass(frozen=True)
class Opened:
    """A verified message, ready for a protocol machine.

    Attributes:
        kind: The registered kind, e.g. ``"node.hello/1"``.
        body: The typed body (an instance of the kind's Body subclass).
        signer: The signer's 32-byte Ed25519 public key.
        signer_peer_id: The signer's libp2p peer id.
        message_id: ``blake3(raw)``, 32 bytes: unique per logical message, used as the key of
            idempotent effects and deduplication.
        raw: The envelope exactly as received, to relay or store without re-encoding.
    """

    kind: str
    body: Body
    signer: bytes
    signer_peer_id: str
    message_id: bytes
    raw: bytes


def new_nonce() -> bytes:
    """16 random bytes for a body's ``nonce``: collisions are negligible at any message rate."""
    return nacl.utils.random(NONCE_LEN)


def signed_bytes(version: int, kind: str, body: bytes) -> bytes:
    """What the signature covers: domain tag, version, length-prefixed kind, body bytes.

    The domain tag keeps these signatures from being valid for any other idlegrid statement;
    the length prefix keeps two (kind, body) pairs from giving the same bytes.

    Raises:
        ValueError: If the version or kind cannot be framed (our bug).
    """
    kind_bytes = kind.encode()
    if not 0 <= version <= 0xFFFF or len(kind_bytes) > 0xFF:
        raise ValueError(f"cannot frame version {version} / kind {kind!r}")
    return DOMAIN + version.to_bytes(2, "big") + bytes([len(kind_bytes)]) + kind_bytes + body


def seal(signing_key: nacl.signing.SigningKey, kind: str, body: Mapping[str, Any]) -> bytes:
    """Signs ``body`` (a wire map) as a message of ``kind``; returns the envelope bytes.

    Raises:
        TypeError: If the body holds a float or another type the codec refuses (our bug).
    """
    body_bytes = encode(dict(body))
    signature = signing_key.sign(signed_bytes(VERSION, kind, body_bytes)).signature
    return encode([VERSION, kind, body_bytes, bytes(signing_key.verify_key), signature])


def seal_body(signing_key: nacl.signing.SigningKey, body: Body) -> bytes:
    """Signs a typed body under its own ``KIND``, checking its fields first."""
    return seal(signing_key, body.KIND, to_wire(body))


def open_envelope(
    raw: bytes,
    now_ms: int,
    registry: Registry,
    *,
    replay: ReplayGuard | None = None,
    limits: Limits = DEFAULT_LIMITS,
    max_ttl_ms: int = MAX_TTL_MS,
) -> Opened:
    """Verifies and parses one envelope from a peer.

    Args:
        raw: The bytes received.
        now_ms: The current time, Unix milliseconds.
        registry: The kinds this node accepts.
        replay: Remembers (signer, nonce) pairs; None skips the replay check (e.g. for a
            message read back from our own store).
        limits: Decoding bounds, applied to the envelope and again to the body.
        max_ttl_ms: How far in the future ``expires_ms`` may lie; also bounds how long the
            replay guard must remember a nonce.

    Raises:
        Invalid: For any fault, with ``what`` and ``reason``; never any other exception.
    """
    version, kind, body_bytes, signer, signature = _read_outer(raw, registry, limits)
    _verify(signer, signature, signed_bytes(version, kind, body_bytes))
    body = registry.parse(kind, decode(body_bytes, limits, "body"))
    check_expiry(body.expires_ms, now_ms, max_ttl_ms)
    if replay is not None:
        replay.check_and_remember(signer, body.nonce, body.expires_ms, now_ms)
    return Opened(
        kind=kind,
        body=body,
        signer=signer,
        signer_peer_id=peer_id_from_public_key(signer),
        message_id=blake3.blake3(raw).digest(),
        raw=raw,
    )


def check_expiry(expires_ms: int, now_ms: int, max_ttl_ms: int = MAX_TTL_MS) -> None:
    """Refuses a message that has expired or claims to live longer than we remember nonces.

    Raises:
        Expired: the message is past ``expires_ms`` (not a peer fault, however long ago: a
            machine that wakes from suspend, or whose clock jumps ahead, finds its queued
            gossip old, and must not blame the honest neighbours that sent it).
        Invalid: it claims to live longer than ``max_ttl_ms``.
    """
    if expires_ms <= now_ms:
        raise Expired("body.expires_ms", "expired")
    if expires_ms > now_ms + max_ttl_ms:
        raise Invalid("body.expires_ms", "too far in the future")


def _read_outer(
    raw: bytes, registry: Registry, limits: Limits
) -> tuple[int, str, bytes, bytes, bytes]:
    """Steps 1 to 4: everything that can be checked before spending a signature check."""
    if len(raw) > limits.max_bytes:
        raise Invalid("envelope", f"too large: {len(raw)} bytes > {limits.max_bytes}")
    # The body travels as one bin, so the outer bin bound is the message bound.
    outer = decode(raw, replace(limits, max_bin_len=limits.max_bytes), "envelope")
    if type(outer) is not list or len(outer) != _OUTER_LEN:
        shape = f"array of {len(outer)}" if type(outer) is list else type_name(outer)
        raise Invalid("envelope", f"expected array of {_OUTER_LEN}, got {shape}")
    version, kind, body, signer, signature = outer
    _expect(version, int, "envelope.version")
    _expect(kind, str, "envelope.kind")
    _expect(body, bytes, "envelope.body")
    _expect(signer, bytes, "envelope.signer", SIGNER_LEN)
    _expect(signature, bytes, "envelope.signature", SIGNATURE_LEN)
    if version not in SUPPORTED_VERSIONS:
        raise Invalid("envelope.version", f"unsupported version {version}")
    if kind not in registry:
        raise Invalid("envelope.kind", f"unknown kind {kind[:40]!r}")
    if encode(outer) != raw:
        raise Invalid("envelope", "non-canonical encoding")
    return version, kind, body, signer, signature


def _expect(value: Any, kind: type, what: str, size: int | None = None) -> None:
    # Exact type: bool is an int subclass and must not pass as a version.
    if type(value) is not kind:
        raise Invalid(what, f"expected {kind.__name__}, got {type_name(value)}")
    if size is not None and isinstance(value, bytes) and len(value) != size:
        raise Invalid(what, f"expected {size} bytes, got {len(value)}")


def _verify(signer: bytes, signature: bytes, message: bytes) -> None:
    # libsodium also refuses non-canonical and small-order keys and a non-canonical S, so a
    # verified (signer, signature) pair cannot be altered into another that verifies.
    try:
        nacl.signing.VerifyKey(signer).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise Invalid("signature", "does not verify") from None
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise Invalid("signature", f"unusable: {type(exc).__name__}") from None


class ReplayGuard:
    """Remembers each accepted (signer, nonce) until the message's own expiry.

    Pure and bounded: memory is at most ``max_entries`` entries (roughly 250 bytes each, so
    about 50 MB at the default), and entries leave in expiry order from a heap.

    When full, it refuses new messages (:class:`Overloaded`, which is not the sender's fault)
    rather than forgetting unexpired nonces: forgetting would let an attacker who floods the
    cache replay anything, whereas refusing only delays messages, which their senders repeat
    with new nonces. ``max_per_signer`` keeps one key from filling the cache for everyone.

    Time only moves forward here: the guard keeps the latest ``now_ms`` it has seen, so a clock
    stepping back cannot resurrect a pruned nonce; a message that expired by that time is
    refused as expired.
    """

    def __init__(self, max_entries: int = 200_000, max_per_signer: int = 20_000) -> None:
        self.max_entries = max_entries
        self.max_per_signer = max_per_signer
        self._expiry: dict[bytes, int] = {}  # signer + nonce -> expires_ms
        self._heap: list[tuple[int, bytes]] = []
        self._per_signer: dict[bytes, int] = {}
        self._now_ms: int | None = None

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_remember(self, signer: bytes, nonce: bytes, expires_ms: int, now_ms: int) -> None:
        """Accepts a (signer, nonce) once until ``expires_ms``.

        Raises:
            Replayed: ``("nonce", "replayed")``: seen before and not yet expired.
            Expired: ``("body.expires_ms", "expired")``: too old to tell (not a peer fault).
            Overloaded: ``what="nonce"``: the cache or this signer's share of it is full.
            ValueError: ``signer`` is not 32 bytes (our bug: envelopes check it first).
        """
        if len(signer) != SIGNER_LEN:
            raise ValueError(f"signer must be {SIGNER_LEN} bytes, got {len(signer)}")
        now = self._advance(now_ms)
        self.prune(now)
        key = signer + nonce
        if key in self._expiry:
            raise Replayed("nonce", "replayed")
        if expires_ms <= now:
            raise Expired("body.expires_ms", "expired")
        if len(self._expiry) >= self.max_entries:
            raise Overloaded("nonce", "replay cache full")
        count = self._per_signer.get(signer, 0)
        if count >= self.max_per_signer:
            raise Overloaded("nonce", "too many unexpired messages from this signer")
        self._expiry[key] = expires_ms
        self._per_signer[signer] = count + 1
        heapq.heappush(self._heap, (expires_ms, key))

    def prune(self, now_ms: int) -> int:
        """Forgets every entry that has expired by ``now_ms``; returns how many."""
        now = self._advance(now_ms)
        removed = 0
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]
            signer = key[:SIGNER_LEN]
            left = self._per_signer[signer] - 1
            if left:
                self._per_signer[signer] = left
            else:
                del self._per_signer[signer]
            removed += 1
        return removed

    def next_deadline(self) -> int | None:
        """When the next entry expires, for a driver that prunes on a timer."""
        return self._heap[0][0] if self._heap else None

    def _advance(self, now_ms: int) -> int:
        if self._now_ms is None or now_ms > self._now_ms:
            self._now_ms = now_ms
        return self._now_ms
