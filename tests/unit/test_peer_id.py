"""Peer ids of Ed25519 keys: a fixed vector, agreement with py-libp2p, and refused ids."""

from __future__ import annotations

import random
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from consensus.errors import Invalid
from consensus.peer_id import (
    b58decode,
    b58encode,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

with warnings.catch_warnings():
    # py-libp2p imports websockets.legacy, which warns on import; not ours to fix here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

SEED_KEY = bytes(SigningKey(bytes(range(32))).verify_key)
SEED_PEER_ID = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"


def libp2p_peer_id(public_key: bytes) -> str:
    return str(ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58())


def test_known_vector() -> None:
    assert peer_id_from_public_key(SEED_KEY) == SEED_PEER_ID
    assert public_key_from_peer_id(SEED_PEER_ID) == SEED_KEY


def test_agrees_with_py_libp2p_on_random_keys() -> None:
    rng = random.Random(20261122)
    for _ in range(300):
        public_key = bytes(SigningKey(rng.randbytes(32)).verify_key)
        peer_id = peer_id_from_public_key(public_key)
        assert peer_id == libp2p_peer_id(public_key)
        assert peer_id.startswith("12D3KooW")
        assert public_key_from_peer_id(peer_id) == public_key


@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_round_trip(public_key: bytes) -> None:
    assert public_key_from_peer_id(peer_id_from_public_key(public_key)) == public_key


def test_wrong_key_length_is_our_bug() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        peer_id_from_public_key(b"\x01" * 31)


@pytest.mark.parametrize(
    "peer_id",
    [
        "",
        "0" * 52,  # '0' is not in the alphabet
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeS",  # one character short
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSBB",  # one too many
        "1" + SEED_PEER_ID,  # a leading zero byte
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # sha256 multihash (RSA-style id)
        "16Uiu2HAmLhLvBoYaoZfaMUKuibM6ac163GwKY74c5kiSLg5KvLpY",  # secp256k1 identity id
        "bafzaajaiaejcb3zq4dpqb6b64tmyh6dusn6izj7zt6cegq6ck3wvdkk3nx3qidk",  # CIDv1 form
        "x" * 1000,
    ],
)
def test_anything_but_an_ed25519_identity_id_is_invalid(peer_id: str) -> None:
    with pytest.raises(Invalid) as caught:
        public_key_from_peer_id(peer_id)
    assert caught.value.what == "peer_id"


def test_invalid_is_a_value_error_for_callers_that_expect_one() -> None:
    with pytest.raises(ValueError, match="invalid peer_id"):
        public_key_from_peer_id("not a peer id")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"\0", "1"),
        (b"\0\0\x01", "112"),
        (b"hello world", "StV1DL6CwTryKyV"),
        # From the base58 IETF draft (draft-msporny-base58).
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
    ],
)
def test_base58_vectors(raw: bytes, text: str) -> None:
    assert b58decode(text) == raw
    assert b58encode(raw) == text


@given(st.binary(max_size=64))
def test_base58_round_trips(raw: bytes) -> None:
    assert b58decode(b58encode(raw)) == raw
