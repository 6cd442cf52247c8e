"""The signed envelope: golden vectors, round trips, and what a valid message looks like.

The helpers at the top build envelopes by hand (raw msgpack, any signature) so that every check
in ``open_envelope`` can be reached on its own; the rejection, mutation and replay tests in
``test_envelope_*.py`` import them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import blake3
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from consensus.codec import Limits, encode
from consensus.envelope import (
    DOMAIN,
    MAX_TTL_MS,
    VERSION,
    Opened,
    ReplayGuard,
    new_nonce,
    open_envelope,
    seal,
    seal_body,
    signed_bytes,
)
from consensus.errors import Invalid
from consensus.kinds import DEFAULT_REGISTRY, Hello, Ping, to_wire

KEY = SigningKey(bytes(range(32)))
OTHER_KEY = SigningKey(bytes(range(1, 33)))
SIGNER = bytes(KEY.verify_key)
NOW = 1_700_000_000_000
NONCE = bytes(range(16))
PING = "node.ping/1"
REGISTRY = DEFAULT_REGISTRY

# seal_body(KEY, Ping(expires_ms=NOW + 60_000, nonce=NONCE, seq=7)), byte for byte:
#   95                      array of 5
#   01                      version 1
#   ab "node.ping/1"        kind
#   c4 32 <50 bytes>        body: 83 {"expires_ms": cf 0000018bcfe65260, "nonce": c4 10 <16>,
#                           "seq": 07}, keys sorted
#   c4 20 <32 bytes>        signer
#   c4 40 <64 bytes>        Ed25519 signature over DOMAIN | 0001 | 0b "node.ping/1" | body
GOLDEN_PING = bytes.fromhex(
    "9501ab6e6f64652e70696e672f31c43283aa657870697265735f6d73cf0000018bcfe65260a56e6f6e6365c410"
    "000102030405060708090a0b0c0d0e0fa373657107c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba5"
    "0d5f1ddc8664125531b8c440355dea2e79c3ca86ec2fb85582760c4bdc9725ddfaaae7d68d8c2939ffe2efbd88"
    "c3552a777c07abc46c06a70f47608e39a05eb3d16a6e900a2e77399e777400"
)
GOLDEN_HELLO = bytes.fromhex(
    "9501ac6e6f64652e68656c6c6f2f31c47085aa657870697265735f6d73cf0000018bcfe65260a66c697374656e"
    "91b72f6970342f3132372e302e302e312f7463702f34303031a56e6f6e6365c410000102030405060708090a0b"
    "0c0d0e0fa5726f6c657392a6776f726b6572a673656e747279a776657273696f6ea5302e312e30c42003a107bf"
    "f3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8c4406d588adf02b2de58c67ea83b436316"
    "48ab9be5ecf59d0001c3ad605770bfc72ddebf3a47c5508e2401dc15a385c9be6c753d0261125fa4ec3ed26789"
    "f9c6d405"
)


def ping_wire(**changes: Any) -> dict[str, Any]:
    """A valid ping body map; a value of ``...`` removes that key."""
    wire: dict[str, Any] = {"expires_ms": NOW + 60_000, "nonce": NONCE, "seq": 7}
    wire.update(changes)
    return {key: value for key, value in wire.items() if value is not ...}


def pack(value: Any) -> bytes:
    """Plain msgpack, without the codec's checks: builds what a hostile peer could send."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def frame(
    body: bytes,
    *,
    version: Any = VERSION,
    kind: Any = PING,
    signer: Any = SIGNER,
    signature: Any = b"\0" * 64,
) -> bytes:
    return pack([version, kind, body, signer, signature])


def signed(
    body: bytes, *, kind: str = PING, version: int = VERSION, key: SigningKey = KEY
) -> bytes:
    """A correctly signed envelope around any body bytes, so body checks can be reached."""
    signature = key.sign(signed_bytes(version, kind, body)).signature
    return frame(
        body, version=version, kind=kind, signer=bytes(key.verify_key), signature=signature
    )


def open_at(raw: bytes, now_ms: int = NOW, **kwargs: Any) -> Opened:
    return open_envelope(raw, now_ms, REGISTRY, **kwargs)


def refusal(raw: bytes, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(Invalid) as caught:
        open_at(raw, **kwargs)
    return caught.value.what, caught.value.reason


def test_golden_ping_envelope() -> None:
    body = Ping(expires_ms=NOW + 60_000, nonce=NONCE, seq=7)
    assert seal_body(KEY, body) == GOLDEN_PING
    assert seal(KEY, PING, {"seq": 7, "nonce": NONCE, "expires_ms": NOW + 60_000}) == GOLDEN_PING
    opened = open_at(GOLDEN_PING)
    assert opened.body == body
    assert opened.message_id.hex() == blake3.blake3(GOLDEN_PING).hexdigest()
    # The signed bytes, rebuilt here by hand rather than by signed_bytes().
    _, _, body_bytes, signer, signature = msgpack.unpackb(GOLDEN_PING)
    message = b"idlegrid/envelope/v1\x00" + b"\x00\x01" + b"\x0b" + b"node.ping/1" + body_bytes
    VerifyKey(signer).verify(message, signature)


def test_golden_hello_envelope() -> None:
    body = Hello(
        expires_ms=NOW + 60_000,
        nonce=NONCE,
        roles=["worker", "sentry"],
        version="0.1.0",
        listen=["/ip4/127.0.0.1/tcp/4001"],
    )
    assert seal_body(KEY, body) == GOLDEN_HELLO
    assert open_at(GOLDEN_HELLO).body == body


def test_signed_bytes_layout_and_length_prefix() -> None:
    assert (
        signed_bytes(1, PING, b"\x80") == DOMAIN + bytes.fromhex("00010b") + PING.encode() + b"\x80"
    )
    assert signed_bytes(1, "a", b"bc") != signed_bytes(1, "ab", b"c")
    with pytest.raises(ValueError, match="cannot frame"):
        signed_bytes(1, "k" * 256, b"")


def test_opened_names_signer_and_message() -> None:
    opened = open_at(GOLDEN_PING)
    assert opened.kind == PING
    assert isinstance(opened.body, Ping)
    assert opened.signer == SIGNER
    assert opened.signer_peer_id == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    assert len(opened.message_id) == 32
    assert opened.raw == GOLDEN_PING


def test_body_is_verified_as_received_not_re_encoded() -> None:
    # A peer's own (unsorted, wider) body encoding is fine: the signature covers its bytes.
    body = b"\x83\xa3seq\xce\x00\x00\x00\x07\xa5nonce\xc4\x10" + NONCE
    body += b"\xaaexpires_ms" + pack(NOW + 60_000)
    assert open_at(signed(body)).body == Ping(expires_ms=NOW + 60_000, nonce=NONCE, seq=7)


def test_unknown_body_keys_are_ignored() -> None:
    assert open_at(signed(encode(ping_wire(later={"x": [1]})))).body == Ping(
        expires_ms=NOW + 60_000, nonce=NONCE, seq=7
    )


def test_expiry_window_bounds_are_exact() -> None:
    assert open_at(signed(encode(ping_wire(expires_ms=NOW + 1)))).body.expires_ms == NOW + 1
    assert open_at(signed(encode(ping_wire(expires_ms=NOW + MAX_TTL_MS)))) is not None
    shorter = signed(encode(ping_wire(expires_ms=NOW + 2000)))
    assert refusal(shorter, max_ttl_ms=1000) == ("body.expires_ms", "too far in the future")


def test_seal_refuses_our_own_floats() -> None:
    with pytest.raises(TypeError, match="floats"):
        seal(KEY, PING, ping_wire(seq=1.0))


def test_new_nonce_is_random_and_sized() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert {len(nonce) for nonce in nonces} == {16}


BODIES = st.one_of(
    st.builds(
        Ping,
        expires_ms=st.integers(NOW + 1, NOW + MAX_TTL_MS),
        nonce=st.binary(min_size=16, max_size=16),
        seq=st.integers(-(2**63), 2**64 - 1),
    ),
    st.builds(
        Hello,
        expires_ms=st.integers(NOW + 1, NOW + MAX_TTL_MS),
        nonce=st.binary(min_size=16, max_size=16),
        roles=st.lists(st.sampled_from(["requester", "worker", "sentry"]), max_size=3),
        version=st.text(max_size=20),
        listen=st.lists(st.text(max_size=60), max_size=8),
    ),
)


@given(BODIES, st.binary(min_size=32, max_size=32))
def test_seal_then_open_round_trips(body: Ping | Hello, seed: bytes) -> None:
    key = SigningKey(seed)
    raw = seal_body(key, body)
    opened = open_at(raw, replay=ReplayGuard())
    assert opened.body == body
    assert opened.kind == body.KIND
    assert opened.signer == bytes(key.verify_key)
    assert opened.message_id == blake3.blake3(raw).digest()


def test_body_limits_are_the_callers() -> None:
    raw = signed(encode(ping_wire(extra=1)))
    assert refusal(raw, limits=Limits(max_map_len=3)) == ("body", "4 exceeds max_map_len(3)")


def test_a_field_omitted_when_empty_leaves_the_old_wire_and_round_trips_when_set() -> None:
    old = Hello(expires_ms=NOW + 60_000, nonce=NONCE, roles=["sentry"], version="0.1.0",
                listen=[])  # fmt: skip
    assert set(to_wire(old)) == {"expires_ms", "nonce", "roles", "version", "listen"}
    bound = replace(old, chain_address=b"\x01" * 20, binding=b"\x02" * 65)
    assert to_wire(bound)["chain_address"] == b"\x01" * 20
    assert open_at(seal_body(KEY, bound)).body == bound
    with pytest.raises(ValueError, match="chain_address must be 20 bytes"):
        replace(old, chain_address=b"\x01" * 20)
