"""Every mutation of a valid signed envelope is refused with ``Invalid`` and a reason.

Never another exception, and never accepted: a relay cannot alter a message, re-encode it, or
graft another signer, signature or kind onto it. Each test starts from valid envelopes (the
golden ones and freshly sealed random bodies) and asserts the refusal.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from consensus.envelope import VERSION, ReplayGuard, seal_body, signed_bytes
from consensus.errors import Invalid
from consensus.kinds import Body
from tests.unit.test_envelope import (
    BODIES,
    GOLDEN_HELLO,
    GOLDEN_PING,
    KEY,
    OTHER_KEY,
    open_at,
    pack,
)

# The order of the Ed25519 group: S and S + L are the same scalar mod L.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


@st.composite
def keyed_envelopes(draw: st.DrawFn) -> tuple[SigningKey, bytes]:
    """A valid envelope and its signer: a golden one, or a random body sealed by a random key."""
    if draw(st.booleans()):
        return KEY, draw(st.sampled_from([GOLDEN_PING, GOLDEN_HELLO]))
    body: Body = draw(BODIES)
    key = SigningKey(draw(st.binary(min_size=32, max_size=32)))
    return key, seal_body(key, body)


def envelopes() -> st.SearchStrategy[bytes]:
    return keyed_envelopes().map(lambda keyed: keyed[1])


def refused(raw: bytes) -> Invalid:
    """Opens ``raw`` (now, with a fresh replay guard) and returns the refusal."""
    with pytest.raises(Invalid) as caught:
        open_at(raw, replay=ReplayGuard())
    assert caught.value.what
    assert caught.value.reason
    return caught.value


def parts(raw: bytes) -> list[Any]:
    outer: list[Any] = msgpack.unpackb(raw)
    return outer


def wide(value: Any) -> bytes:
    """Valid msgpack, every header at its widest: same value, different bytes."""
    if value is None or isinstance(value, bool):
        return pack(value)
    if isinstance(value, int):
        return (
            b"\xcf" + value.to_bytes(8, "big")
            if value >= 0
            else b"\xd3" + value.to_bytes(8, "big", signed=True)
        )
    if isinstance(value, str):
        data = value.encode()
        return b"\xdb" + len(data).to_bytes(4, "big") + data
    if isinstance(value, bytes):
        return b"\xc6" + len(value).to_bytes(4, "big") + value
    if isinstance(value, list):
        return b"\xdd" + len(value).to_bytes(4, "big") + b"".join(map(wide, value))
    assert isinstance(value, dict)
    items = b"".join(wide(key) + wide(item) for key, item in value.items())
    return b"\xdf" + len(value).to_bytes(4, "big") + items


def test_the_starting_envelopes_are_valid() -> None:
    assert open_at(GOLDEN_PING) and open_at(GOLDEN_HELLO)


@pytest.mark.parametrize("raw", [GOLDEN_PING, GOLDEN_HELLO], ids=["ping", "hello"])
def test_every_truncation_is_refused(raw: bytes) -> None:
    for length in range(len(raw)):
        refused(raw[:length])


@given(envelopes(), st.data())
def test_byte_flips_are_refused(raw: bytes, data: st.DataObject) -> None:
    flips = data.draw(
        st.dictionaries(st.integers(0, len(raw) - 1), st.integers(1, 255), min_size=1, max_size=8)
    )
    mutated = bytearray(raw)
    for index, mask in flips.items():
        mutated[index] ^= mask
    refused(bytes(mutated))


@given(envelopes(), st.binary(min_size=1, max_size=64))
def test_appended_bytes_are_refused(raw: bytes, tail: bytes) -> None:
    assert refused(raw + tail).reason == "trailing bytes after the value"


@given(envelopes(), st.data())
def test_inserted_bytes_are_refused(raw: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(raw)))
    extra = data.draw(st.binary(min_size=1, max_size=16))
    refused(raw[:at] + extra + raw[at:])


@given(envelopes(), st.data())
def test_deleted_bytes_are_refused(raw: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(raw) - 1))
    end = data.draw(st.integers(start + 1, len(raw)))
    refused(raw[:start] + raw[end:])


@given(envelopes(), st.binary(min_size=32, max_size=32))
def test_another_signer_is_refused(raw: bytes, seed: bytes) -> None:
    version, kind, body, signer, signature = parts(raw)
    other = bytes(SigningKey(seed).verify_key)
    assume(other != signer)
    error = refused(pack([version, kind, body, other, signature]))
    assert (error.what, error.reason) == ("signature", "does not verify")


@given(keyed_envelopes())
def test_a_signature_made_for_another_kind_is_refused(keyed: tuple[SigningKey, bytes]) -> None:
    key, raw = keyed
    version, kind, body, signer, original = parts(raw)
    other_kind = "node.hello/1" if kind == "node.ping/1" else "node.ping/1"
    signature = key.sign(signed_bytes(VERSION, other_kind, body)).signature
    assert refused(pack([version, kind, body, signer, signature])).what == "signature"
    # ...and the kind swapped under the original signature fails the same way.
    assert refused(pack([version, other_kind, body, signer, original])).what == "signature"


@given(envelopes())
def test_a_body_re_encoded_differently_keeps_no_signature(raw: bytes) -> None:
    version, kind, body, signer, signature = parts(raw)
    logical = msgpack.unpackb(body)
    reordered = pack(dict(reversed(list(logical.items()))))
    for variant in (reordered, wide(logical)):
        assert variant != body
        error = refused(pack([version, kind, variant, signer, signature]))
        assert (error.what, error.reason) == ("signature", "does not verify")


@given(envelopes())
def test_a_non_canonical_outer_encoding_is_refused_despite_a_valid_signature(raw: bytes) -> None:
    error = refused(wide(parts(raw)))
    assert (error.what, error.reason) == ("envelope", "non-canonical encoding")


@given(envelopes())
def test_a_malleated_signature_is_refused(raw: bytes) -> None:
    version, kind, body, signer, signature = parts(raw)
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    assume(s < 2**256)
    malleated = signature[:32] + s.to_bytes(32, "little")
    assert refused(pack([version, kind, body, signer, malleated])).what == "signature"


@given(envelopes(), envelopes())
def test_parts_grafted_from_another_valid_envelope_are_refused(first: bytes, second: bytes) -> None:
    a, b = parts(first), parts(second)
    for index in (2, 3, 4):  # body, signer, signature
        assume(a[index] != b[index])
    for index in (2, 3, 4):
        grafted = list(a)
        grafted[index] = b[index]
        refused(pack(grafted))


@given(envelopes(), st.integers(-(2**63), 2**64 - 1))
def test_another_version_is_refused(raw: bytes, version: int) -> None:
    assume(version != VERSION)
    _, kind, body, signer, signature = parts(raw)
    assert refused(pack([version, kind, body, signer, signature])).what == "envelope.version"


@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused(raw: bytes) -> None:
    refused(raw)


def test_a_signature_by_another_key_over_the_same_bytes_is_refused() -> None:
    version, kind, body, signer, _ = parts(GOLDEN_PING)
    signature = OTHER_KEY.sign(signed_bytes(version, kind, body)).signature
    assert refused(pack([version, kind, body, signer, signature])).what == "signature"
