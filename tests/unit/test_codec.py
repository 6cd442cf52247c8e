"""Strict msgpack: every limit at and just past its bound, every refused type, and fuzzing."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.codec import DEFAULT_LIMITS, Limits, decode, encode
from consensus.errors import Invalid

SMALL = Limits(
    max_bytes=1000, max_depth=3, max_str_len=10, max_bin_len=10, max_array_len=4, max_map_len=2
)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def reason(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(Invalid) as caught:
        decode(data, limits, what="thing")
    assert caught.value.what == "thing"
    return caught.value.reason


@pytest.mark.parametrize(
    ("at_limit", "past_limit", "words"),
    [
        (b"\xc4\x00" + b"\x00" * 998, b"\xc4\x00" + b"\x00" * 999, "too large"),
        (pack(nested(3)), pack(nested(4)), "nested deeper than 3"),
        (pack("a" * 10), pack("a" * 11), "max_str_len"),
        (pack(b"a" * 10), pack(b"a" * 11), "max_bin_len"),
        (pack([1, 2, 3, 4]), pack([1, 2, 3, 4, 5]), "max_array_len"),
        (pack({"a": 1, "b": 2}), pack({"a": 1, "b": 2, "c": 3}), "max_map_len"),
    ],
    ids=["bytes", "depth", "str", "bin", "array", "map"],
)
def test_each_limit_holds_at_its_bound_and_refuses_one_past(
    at_limit: bytes, past_limit: bytes, words: str
) -> None:
    if words != "too large":  # the 1000-byte filler is not one value; size is checked first
        decode(at_limit, SMALL)
    assert words in reason(past_limit, SMALL)


def test_depth_counts_maps_and_arrays_alike() -> None:
    assert decode(pack({"a": [{"b": 1}]}), SMALL) == {"a": [{"b": 1}]}
    assert "nested deeper" in reason(pack({"a": [{"b": [1]}]}), SMALL)
    assert decode(pack(5), Limits(max_depth=0)) == 5
    assert "nested deeper" in reason(pack([]), Limits(max_depth=0))


def test_nesting_past_msgpacks_own_stack_is_invalid_not_a_crash() -> None:
    assert "nested deeper" in reason(b"\x91" * 5000 + b"\x00")


def test_default_limits_are_sane() -> None:
    assert DEFAULT_LIMITS.max_bytes == 512 * 1024
    assert DEFAULT_LIMITS.max_depth == 8
    assert decode(pack(["x" * 60_000, b"y" * 200_000, list(range(1000))])) is not None


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "malformed msgpack"),
        (b"\xc1", "malformed msgpack"),  # the one reserved byte
        (b"\x92\x01", "malformed msgpack"),  # truncated
        (b"\x01\x02", "trailing bytes"),
        (b"\xa1\xff", "not valid utf-8"),
        (b"\xcb" + b"\x00" * 8, "float not allowed"),
        (b"\xca" + b"\x00" * 4, "float not allowed"),
        (pack(msgpack.ExtType(5, b"x")), "ext type 5 not allowed"),
        (b"\xd4\xf9\x00", "ext type -7 not allowed"),
        (b"\xc7\x64\xf9" + b"x" * 100, "max_ext_len"),  # refused before its payload is copied
        (pack(msgpack.Timestamp(1, 0)), "ext type -1 (timestamp) not allowed"),
        (b"\x81\x01\x02", "map key"),  # int key
        (b"\x81\xc4\x01k\x02", "map key must be str, got bytes"),
        (b"\x81\x91\x01\x02", "map key"),  # array key
        (b"\x82\xa1a\x01\xa1a\x02", "duplicate map key"),
        (b"\x91\x81\xa1a\x81\x01\x01", "map key"),  # nested bad key
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # claims 4G elements
        (b"\xdb\xff\xff\xff\xff", "malformed msgpack"),  # claims 4 GiB of str, has none
    ],
)
def test_refusals_name_their_reason(data: bytes, words: str) -> None:
    assert words in reason(data)


def test_plain_types_decode() -> None:
    value: dict[str, Any] = {
        "n": None,
        "t": True,
        "i": -(2**63),
        "u": 2**64 - 1,
        "s": "é",
        "b": b"\0",
        "l": [[]],
    }
    assert decode(pack(value)) == value


@given(st.binary(max_size=300))
@settings(max_examples=2000)
def test_arbitrary_bytes_only_ever_raise_invalid(data: bytes) -> None:
    try:
        decode(data)
    except Invalid as exc:
        assert exc.reason


@given(st.binary(max_size=60).map(lambda tail: b"\x93\x81\xa1k" + tail))
def test_arbitrary_tails_after_a_valid_head_only_raise_invalid(data: bytes) -> None:
    try:
        decode(data)
    except Invalid as exc:
        assert exc.reason


WIRE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(WIRE_VALUES)
def test_encode_then_decode_round_trips(value: Any) -> None:
    assert decode(encode(value), Limits(max_depth=64)) == value


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 9), max_size=8))
def test_encode_is_independent_of_key_insertion_order(value: dict[str, int]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert encode(value) == encode(reordered)
    assert list(msgpack.unpackb(encode(reordered))) == sorted(value)


def test_encode_is_minimal_and_uses_bin_for_bytes() -> None:
    assert encode([1, "a", b"a", True, None]) == bytes.fromhex("9501a161c40161c3c0")
    assert encode((1, 2)) == encode([1, 2])


@pytest.mark.parametrize("value", [1.5, [0.0], {"a": {"b": [float("nan")]}}])
def test_encode_refuses_floats_anywhere(value: Any) -> None:
    with pytest.raises(TypeError, match="floats are not allowed"):
        encode(value)


@pytest.mark.parametrize("value", [{1: 2}, {"a": {b"k": 1}}])
def test_encode_refuses_non_str_keys(value: Any) -> None:
    with pytest.raises(TypeError, match="map keys must be str"):
        encode(value)


def test_encode_refuses_ints_msgpack_cannot_carry() -> None:
    with pytest.raises(OverflowError):
        encode(2**64)
    with pytest.raises(TypeError):
        encode(object())
