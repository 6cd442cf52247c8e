"""libp2p peer ids of Ed25519 keys, without depending on libp2p (consensus stays pure).

A libp2p peer id for a key whose protobuf encoding is at most 42 bytes is the *identity*
multihash of that encoding, written in base58btc. For Ed25519 that is always::

    0x00 0x24                   identity multihash, 36 bytes follow
    0x08 0x01 0x12 0x20         protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}
    <32 key bytes>

so the key can be read back out of the id, and a message's signer maps to exactly one id.
The CIDv1 text form of peer ids (``bafz...``) is not accepted.
"""

from __future__ import annotations

from functools import lru_cache

from consensus.errors import Invalid

ED25519_KEY_LEN = 32
_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {char: index for index, char in enumerate(_ALPHABET)}
# An Ed25519 peer id is 52 characters; bounding the input bounds the big-int work on bad input.
_MAX_PEER_ID_CHARS = 64
SHORT_PEER = 12


@lru_cache(maxsize=4096)
def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of a 32-byte Ed25519 public key.

    Cached: every opened envelope names its signer's id, and signers repeat.

    Raises:
        ValueError: If ``public_key`` is not 32 bytes (our bug: envelopes check it first).
    """
    if len(public_key) != ED25519_KEY_LEN:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return b58encode(_PREFIX + bytes(public_key))


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside an identity-multihash peer id.

    Raises:
        Invalid: ``what="peer_id"``, for anything but the base58btc id of an Ed25519 key.
    """
    if not isinstance(peer_id, str) or len(peer_id) > _MAX_PEER_ID_CHARS:
        raise Invalid("peer_id", "not an Ed25519 peer id")
    raw = b58decode(peer_id)
    if len(raw) != len(_PREFIX) + ED25519_KEY_LEN or not raw.startswith(_PREFIX):
        raise Invalid("peer_id", "not an Ed25519 identity peer id")
    return raw[len(_PREFIX) :]


def short(peer_id: str) -> str:
    """How people see a peer id, in every table, reason and log: its last ``SHORT_PEER``
    characters (the first ones are the same for every Ed25519 key); "-" for none."""
    return peer_id[-SHORT_PEER:] or "-"


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet): each leading zero byte becomes a leading ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_ALPHABET[digit])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The inverse of :func:`b58encode`.

    Raises:
        Invalid: ``what="peer_id"``, on a character outside the alphabet.
    """
    number = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise Invalid("peer_id", "not base58btc")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body
