"""Job data encrypted end to end: a fresh key per blob, sealed to each peer granted it.

A holder stores and serves only ciphertext, named by its BLAKE3 hash, so anyone who relays or
caches it (another worker, a relay) can check its integrity but never read it. The key goes
only to a peer the holder granted the blob to, in a sealed box to that peer's X25519 key (the
curve twin of the Ed25519 key its peer id names), so a holder needs no extra key exchange and
the key never crosses the wire in the clear, even inside Noise.

File format: ``MAGIC || prefix(16)`` then blocks of at most :data:`BLOCK` plaintext bytes, each
XChaCha20-Poly1305 with nonce ``prefix || index(8)`` and the associated data ``index || last``:
blocks cannot be reordered, dropped or cut off at the end without the open failing.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing

from consensus.peer_id import public_key_from_peer_id

MAGIC = b"IGSEAL1\n"
KEY_BYTES = 32
BLOCK = 1 << 20
_PREFIX_BYTES = 16
_TAG_BYTES = 16
_INDEX = struct.Struct(">Q")


class SealError(Exception):
    """Ciphertext that does not open with its key: corrupt, truncated or not ours."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encrypt_file(key: bytes, source: Path, target: Path) -> None:
    """Writes ``source`` encrypted under ``key`` to ``target``."""
    with target.open("wb") as out:
        out.writelines(encrypt_blocks(key, source))


def encrypt_blocks(key: bytes, source: Path) -> Iterator[bytes]:
    """``source`` encrypted under ``key``, a block at a time (for a store to hash as it
    writes: no sealed copy on disk first)."""
    prefix = os.urandom(_PREFIX_BYTES)
    with source.open("rb") as src:
        yield MAGIC + prefix
        block, index = src.read(BLOCK), 0
        while True:
            following = src.read(BLOCK)
            last = not following
            yield _seal_block(key, prefix, index, last, block)
            if last:
                return
            block, index = following, index + 1


def decrypt_file(key: bytes, source: Path, target: Path) -> None:
    """Writes the plaintext of ``source`` to ``target``.

    Raises:
        SealError: the file is not sealed data, was altered or cut short, or the key is wrong.
    """
    with target.open("wb") as out:
        out.writelines(decrypt_blocks(key, source))


def decrypt_blocks(key: bytes, source: Path) -> Iterator[bytes]:
    """The plaintext of ``source``, a block at a time, each checked before it is yielded.

    Raises:
        SealError: as :func:`decrypt_file`; blocks before the bad one were yielded already, so
            a consumer must not keep a partial result (a store's ``put_stream`` does not).
    """
    with source.open("rb") as src:
        head = src.read(len(MAGIC) + _PREFIX_BYTES)
        if len(head) != len(MAGIC) + _PREFIX_BYTES or not head.startswith(MAGIC):
            raise SealError("not sealed job data")
        prefix, index = head[len(MAGIC) :], 0
        while True:
            sealed = src.read(BLOCK + _TAG_BYTES)
            last = _at_end(src)
            yield _open_block(key, prefix, index, last, sealed)
            if last:
                return
            index += 1


def seal_key(key: bytes, peer_id: str) -> bytes:
    """``key`` in a sealed box only ``peer_id``'s node key can open.

    Raises:
        consensus.errors.Invalid: ``peer_id`` is not an Ed25519 peer id.
    """
    verify_key = nacl.signing.VerifyKey(public_key_from_peer_id(peer_id))
    return bytes(nacl.public.SealedBox(verify_key.to_curve25519_public_key()).encrypt(key))


def open_key(box: bytes, signing_key: nacl.signing.SigningKey) -> bytes:
    """Raises SealError unless ``box`` is a key sealed to ``signing_key``'s node."""
    try:
        key = nacl.public.SealedBox(signing_key.to_curve25519_private_key()).decrypt(box)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise SealError("the key box does not open with this node's key") from None
    if len(key) != KEY_BYTES:
        raise SealError("the key box holds no key")
    return bytes(key)


def _nonce_and_ad(prefix: bytes, index: int, last: bool) -> tuple[bytes, bytes]:
    packed = _INDEX.pack(index)
    return prefix + packed, packed + (b"\x01" if last else b"\x00")


def _seal_block(key: bytes, prefix: bytes, index: int, last: bool, block: bytes) -> bytes:
    nonce, ad = _nonce_and_ad(prefix, index, last)
    return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(block, ad, nonce, key))


def _open_block(key: bytes, prefix: bytes, index: int, last: bool, sealed: bytes) -> bytes:
    nonce, ad = _nonce_and_ad(prefix, index, last)
    try:
        return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, ad, nonce, key))
    except nacl.exceptions.CryptoError:
        raise SealError(f"block {index} does not open: altered, reordered or cut short") from None


def _at_end(src: BinaryIO) -> bool:
    here = src.tell()
    more = src.read(1)
    src.seek(here)
    return not more
