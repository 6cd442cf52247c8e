"""The schema system: strict parsing by annotation, Wei, paths in errors, registration rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.kinds import (
    DEFAULT_REGISTRY,
    NONCE_LEN,
    WEI_MAX,
    Body,
    Hello,
    Ping,
    Registry,
    Wei,
    exact_size,
    from_wire,
    to_wire,
)

NONCE = bytes(range(NONCE_LEN))


@dataclass(frozen=True, kw_only=True)
class Terms:
    price_wei: Wei
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Offer(Body):
    KIND: ClassVar[str] = "test.offer/1"
    price_wei: Wei
    gpus: list[str]
    tags: dict[str, int]
    digest: bytes = field(metadata=exact_size(32))
    terms: Terms
    region: str | None = None
    urgent: bool = False
    extras: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Window(Body):
    KIND: ClassVar[str] = "test.window/1"
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise Invalid("body.end_ms", "before start_ms")


def offer_wire(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "expires_ms": 1000,
        "nonce": NONCE,
        "price_wei": str(10**30),
        "gpus": ["a100", "h100"],
        "tags": {"a": 1},
        "digest": b"\x07" * 32,
        "terms": {"price_wei": "5"},
    }
    wire.update(changes)
    return {key: value for key, value in wire.items() if value is not ...}


def refusal(cls: type[Any], wire: Any) -> tuple[str, str]:
    with pytest.raises(Invalid) as caught:
        from_wire(cls, wire)
    return caught.value.what, caught.value.reason


def test_parses_every_supported_type() -> None:
    offer = from_wire(Offer, offer_wire(region="eu", urgent=True, extras=[-1, 2**64 - 1]))
    assert offer == Offer(
        expires_ms=1000,
        nonce=NONCE,
        price_wei=Wei(10**30),
        gpus=["a100", "h100"],
        tags={"a": 1},
        digest=b"\x07" * 32,
        terms=Terms(price_wei=Wei(5)),
        region="eu",
        urgent=True,
        extras=[-1, 2**64 - 1],
    )


def test_defaults_fill_missing_optional_fields_and_unknown_keys_are_ignored() -> None:
    offer = from_wire(Offer, offer_wire(future_field={"anything": [1]}, region=None))
    assert (offer.region, offer.urgent, offer.extras) == (None, False, [])
    assert not hasattr(offer, "future_field")


@pytest.mark.parametrize(
    ("changes", "what", "reason"),
    [
        ({"gpus": ...}, "body.gpus", "missing"),
        ({"nonce": ...}, "body.nonce", "missing"),
        ({"terms": {}}, "body.terms.price_wei", "missing"),
        ({"expires_ms": "1000"}, "body.expires_ms", "expected int, got str"),
        ({"expires_ms": True}, "body.expires_ms", "expected int, got bool"),
        ({"expires_ms": None}, "body.expires_ms", "expected int, got None"),
        ({"urgent": 1}, "body.urgent", "expected bool, got int"),
        ({"region": b"eu"}, "body.region", "expected str, got bytes"),
        ({"nonce": NONCE[:-1]}, "body.nonce", "expected 16 bytes, got 15"),
        ({"nonce": "x" * 16}, "body.nonce", "expected bytes, got str"),
        ({"digest": b""}, "body.digest", "expected 32 bytes, got 0"),
        ({"gpus": "a100"}, "body.gpus", "expected list, got str"),
        ({"gpus": ["a100", 7]}, "body.gpus[1]", "expected str, got int"),
        ({"tags": [1]}, "body.tags", "expected map, got list"),
        ({"tags": {"a": 1, "b": "2"}}, "body.tags['b']", "expected int, got str"),
        ({"terms": [5]}, "body.terms", "expected map, got list"),
        ({"terms": {"price_wei": 5}}, "body.terms.price_wei", "expected wei as a decimal str"),
        ({"extras": [1, False]}, "body.extras[1]", "expected int, got bool"),
    ],
)
def test_refusals_name_the_field_and_the_reason(
    changes: dict[str, Any], what: str, reason: str
) -> None:
    got_what, got_reason = refusal(Offer, offer_wire(**changes))
    assert got_what == what
    assert got_reason.startswith(reason)


def test_a_body_that_is_not_a_map_is_refused() -> None:
    assert refusal(Ping, [1, 2]) == ("body", "expected map, got list")


@pytest.mark.parametrize("text", ["0", "1", "10", str(10**30), str(WEI_MAX)])
def test_wei_accepts_canonical_decimal_text(text: str) -> None:
    assert from_wire(Offer, offer_wire(price_wei=text)).price_wei == int(text)


NOT_WEI = ["", "01", "00", "-1", "+1", "1_000", " 1", "1 ", "1e3", "0x10", str(WEI_MAX + 1)]
NOT_WEI += [
    "9" * 79,
    "\u0661\u0662",
    "\uff11",
]  # Arabic-Indic and fullwidth digits: int() takes them


@pytest.mark.parametrize("text", NOT_WEI)
def test_wei_refuses_every_other_spelling(text: str) -> None:
    what, _ = refusal(Offer, offer_wire(price_wei=text))
    assert what == "body.price_wei"


def test_post_init_rules_surface_as_invalid() -> None:
    wire = {"expires_ms": 1, "nonce": NONCE, "start_ms": 5, "end_ms": 4}
    assert refusal(Window, wire) == ("body.end_ms", "before start_ms")


def test_to_wire_is_the_inverse_and_carries_wei_as_text() -> None:
    offer = from_wire(Offer, offer_wire(region="eu"))
    wire = to_wire(offer)
    assert wire["price_wei"] == str(10**30)
    assert wire["terms"] == {"price_wei": "5", "note": None}
    assert from_wire(Offer, wire) == offer


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"price_wei": Wei(-1)}, ValueError),
        ({"price_wei": Wei(WEI_MAX + 1)}, ValueError),
        ({"expires_ms": 1.5}, TypeError),
        ({"expires_ms": True}, TypeError),
        ({"nonce": b"short"}, ValueError),
        ({"gpus": ["ok", 3]}, TypeError),
        ({"terms": {"price_wei": "5"}}, TypeError),
    ],
)
def test_to_wire_refuses_what_a_peer_would_refuse(changes: dict[str, Any], error: type) -> None:
    offer = from_wire(Offer, offer_wire())
    fields = {**offer.__dict__, **changes}
    broken = Offer.__new__(Offer)
    for name, value in fields.items():
        object.__setattr__(broken, name, value)
    with pytest.raises(error):
        to_wire(broken)


OFFERS = st.builds(
    Offer,
    expires_ms=st.integers(-(2**63), 2**64 - 1),
    nonce=st.binary(min_size=16, max_size=16),
    price_wei=st.integers(0, WEI_MAX).map(Wei),
    gpus=st.lists(st.text(max_size=10), max_size=4),
    tags=st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=4),
    digest=st.binary(min_size=32, max_size=32),
    terms=st.builds(Terms, price_wei=st.integers(0, WEI_MAX).map(Wei), note=st.none() | st.text()),
    region=st.none() | st.text(max_size=5),
    urgent=st.booleans(),
    extras=st.lists(st.integers(-(2**63), 2**64 - 1), max_size=4),
)


@given(OFFERS)
def test_from_wire_of_to_wire_round_trips(offer: Offer) -> None:
    assert from_wire(Offer, to_wire(offer)) == offer


def test_default_registry_holds_hello_and_ping() -> None:
    assert list(DEFAULT_REGISTRY) == ["node.hello/1", "node.ping/1"]
    assert DEFAULT_REGISTRY.get("node.hello/1") is Hello
    hello = {"expires_ms": 1, "nonce": NONCE, "roles": ["worker"], "version": "0.1.0", "listen": []}
    assert DEFAULT_REGISTRY.parse("node.hello/1", hello) == Hello(
        expires_ms=1, nonce=NONCE, roles=["worker"], version="0.1.0", listen=[]
    )


def test_registry_refuses_unknown_kinds_and_duplicates() -> None:
    registry = DEFAULT_REGISTRY.copy()
    assert registry.register(Offer) is Offer
    assert "test.offer/1" in registry
    assert "test.offer/1" not in DEFAULT_REGISTRY
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Offer)
    with pytest.raises(Invalid) as caught:
        registry.parse("test.nothing/1", {})
    assert (caught.value.what, caught.value.reason) == (
        "envelope.kind",
        "unknown kind 'test.nothing/1'",
    )


def test_registry_refuses_classes_that_are_not_kinds() -> None:
    registry = Registry()

    class Undecorated(Ping):
        KIND: ClassVar[str] = "test.undecorated/1"

    @dataclass(frozen=True, kw_only=True)
    class BadKind(Body):
        KIND: ClassVar[str] = "No Spaces Please"

    not_kinds: list[Any] = [Undecorated, BadKind, Terms, int]
    for cls in not_kinds:
        with pytest.raises(TypeError):
            registry.register(cls)


@pytest.mark.parametrize(
    "annotation",
    [
        "float",
        "tuple[int, ...]",
        "set[str]",
        "Any",
        "dict[int, str]",
        "int | str",
        "Ping",
        "object",
    ],
)
def test_unsupported_annotations_fail_at_registration(annotation: str) -> None:
    namespace: dict[str, Any] = {}
    source = (
        "@dataclass(frozen=True, kw_only=True)\n"
        "class Odd(Body):\n"
        "    KIND: ClassVar[str] = 'test.odd/1'\n"
        f"    odd: {annotation}\n"
    )
    exec(source, {**globals(), "Any": Any}, namespace)
    with pytest.raises(TypeError):
        Registry([namespace["Odd"]])


def test_exact_size_applies_only_to_bytes() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Sized(Body):
        KIND: ClassVar[str] = "test.sized/1"
        count: int = field(metadata=exact_size(4))

    with pytest.raises(TypeError, match="exact_size"):
        Registry([Sized])


def test_optional_sized_bytes() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Maybe(Body):
        KIND: ClassVar[str] = "test.maybe/1"
        digest: bytes | None = field(default=None, metadata=exact_size(4))

    Registry([Maybe])
    base = {"expires_ms": 1, "nonce": NONCE}
    assert from_wire(Maybe, base).digest is None
    assert from_wire(Maybe, {**base, "digest": b"abcd"}).digest == b"abcd"
    assert refusal(Maybe, {**base, "digest": b"abc"}) == ("body.digest", "expected 4 bytes, got 3")
