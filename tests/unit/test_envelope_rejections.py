"""One row per reason ``open_envelope`` refuses a message, asserting its ``what`` and ``reason``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from consensus.codec import encode
from consensus.envelope import MAX_TTL_MS, VERSION, ReplayGuard, signed_bytes
from consensus.errors import Invalid
from tests.unit.test_envelope import (
    GOLDEN_PING,
    KEY,
    NONCE,
    NOW,
    OTHER_KEY,
    PING,
    SIGNER,
    frame,
    open_at,
    pack,
    ping_wire,
    signed,
)


def deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


GOOD_BODY = encode(ping_wire())
GOOD_SIG = KEY.sign(signed_bytes(VERSION, PING, GOOD_BODY)).signature
OTHER_SIG = OTHER_KEY.sign(signed_bytes(VERSION, PING, GOOD_BODY)).signature
# One row per rejection reason: how to build the envelope, then the expected what and reason.
TABLE = [
    pytest.param(
        lambda: signed(encode(ping_wire(pad=b"x" * 200_000)) * 3),
        "envelope",
        "too large",
        id="oversized",
    ),
    pytest.param(lambda: b"\xc1", "envelope", "malformed msgpack", id="malformed msgpack"),
    pytest.param(lambda: GOLDEN_PING[:-1], "envelope", "malformed msgpack", id="truncated"),
    pytest.param(lambda: GOLDEN_PING + b"\x00", "envelope", "trailing bytes", id="trailing bytes"),
    pytest.param(
        lambda: pack({"v": 1}), "envelope", "expected array of 5, got dict", id="not an array"
    ),
    pytest.param(
        lambda: pack([1, PING, GOOD_BODY, SIGNER]),
        "envelope",
        "expected array of 5, got array of 4",
        id="array of 4",
    ),
    pytest.param(
        lambda: pack([1, PING, GOOD_BODY, SIGNER, GOOD_SIG, 0]),
        "envelope",
        "expected array of 5, got array of 6",
        id="array of 6",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, version="1"),
        "envelope.version",
        "expected int, got str",
        id="version str",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, version=True),
        "envelope.version",
        "expected int, got bool",
        id="version bool",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, kind=PING.encode()),
        "envelope.kind",
        "expected str, got bytes",
        id="kind bytes",
    ),
    pytest.param(
        lambda: pack([1, PING, ping_wire(), SIGNER, GOOD_SIG]),
        "envelope.body",
        "expected bytes, got dict",
        id="body map",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, signer=SIGNER[:31]),
        "envelope.signer",
        "expected 32 bytes, got 31",
        id="signer short",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, signer="k" * 32),
        "envelope.signer",
        "expected bytes, got str",
        id="signer str",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, signature=GOOD_SIG + b"\0"),
        "envelope.signature",
        "expected 64 bytes, got 65",
        id="signature long",
    ),
    pytest.param(
        lambda: signed(GOOD_BODY, version=2),
        "envelope.version",
        "unsupported version 2",
        id="unknown version",
    ),
    pytest.param(
        lambda: signed(GOOD_BODY, version=0),
        "envelope.version",
        "unsupported version 0",
        id="version zero",
    ),
    pytest.param(
        lambda: signed(GOOD_BODY, kind="node.pong/1"),
        "envelope.kind",
        "unknown kind 'node.pong/1'",
        id="unknown kind",
    ),
    pytest.param(
        lambda: b"\x95\xcc\x01" + signed(GOOD_BODY)[2:],
        "envelope",
        "non-canonical encoding",
        id="non-canonical int",
    ),
    pytest.param(
        lambda: b"\xdc\x00\x05" + signed(GOOD_BODY)[1:],
        "envelope",
        "non-canonical encoding",
        id="non-canonical array",
    ),
    pytest.param(
        lambda: b"\x95\x01\xd9\x0b" + signed(GOOD_BODY)[3:],
        "envelope",
        "non-canonical encoding",
        id="non-canonical str",
    ),
    pytest.param(
        lambda: signed(GOOD_BODY)[:14] + b"\xc5\x00" + signed(GOOD_BODY)[15:],
        "envelope",
        "non-canonical encoding",
        id="non-canonical bin",
    ),
    pytest.param(
        lambda: frame(GOOD_BODY, signature=OTHER_SIG),
        "signature",
        "does not verify",
        id="signed by another key",
    ),
    pytest.param(lambda: frame(GOOD_BODY), "signature", "does not verify", id="zero signature"),
    pytest.param(lambda: signed(b"\xc1"), "body", "malformed msgpack", id="body malformed"),
    pytest.param(
        lambda: signed(pack([1, 2])), "body", "expected map, got list", id="body not a map"
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(seq=...))), "body.seq", "missing", id="missing field"
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(nonce=...))), "body.nonce", "missing", id="missing nonce"
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(seq="7"))),
        "body.seq",
        "expected int, got str",
        id="wrong field type",
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(seq=True))),
        "body.seq",
        "expected int, got bool",
        id="bool for int",
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(extra=deep(8)))),
        "body",
        "nested deeper than 8",
        id="too deep",
    ),
    pytest.param(
        lambda: signed(pack({**ping_wire(), b"k": 1})),
        "body",
        "map key must be str, got bytes",
        id="bytes map key",
    ),
    pytest.param(
        lambda: signed(pack({**ping_wire(), 1: 1})),
        "body",
        "malformed msgpack: int is not allowed for map key",
        id="int map key",
    ),
    pytest.param(
        lambda: signed(b"\x84" + GOOD_BODY[1:] + b"\xa3seq\x08"),
        "body",
        "duplicate map key",
        id="duplicate key",
    ),
    pytest.param(
        lambda: signed(pack({**ping_wire(), "x": msgpack.ExtType(5, b"x")})),
        "body",
        "ext type 5 not allowed",
        id="ext type",
    ),
    pytest.param(
        lambda: signed(pack({**ping_wire(), "x": msgpack.Timestamp(1, 0)})),
        "body",
        "ext type -1 (timestamp)",
        id="timestamp",
    ),
    pytest.param(
        lambda: signed(pack({**ping_wire(), "x": 1.5})), "body", "float not allowed", id="float"
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(expires_ms=NOW))),
        "body.expires_ms",
        "expired",
        id="expired",
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(expires_ms=NOW + MAX_TTL_MS + 1))),
        "body.expires_ms",
        "too far in the future",
        id="too far in the future",
    ),
    pytest.param(
        lambda: signed(encode(ping_wire(nonce=b"\0" * 8))),
        "body.nonce",
        "expected 16 bytes, got 8",
        id="wrong nonce length",
    ),
    pytest.param(lambda: GOLDEN_PING, "nonce", "replayed", id="replayed"),
]


@pytest.mark.parametrize(("build", "what", "reason"), TABLE)
def test_each_rejection_reason(build: Callable[[], bytes], what: str, reason: str) -> None:
    # The guard already holds (SIGNER, NONCE), which almost every row uses: each row is refused
    # for its own reason, which shows the replay check comes last and burns no nonce early.
    guard = ReplayGuard()
    guard.check_and_remember(SIGNER, NONCE, NOW + 60_000, NOW)
    with pytest.raises(Invalid) as caught:
        open_at(build(), replay=guard)
    assert caught.value.what == what
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(caught.value) == f"invalid {what}: {caught.value.reason}"


@pytest.mark.parametrize("expires_ms", [NOW, NOW - MAX_TTL_MS, NOW - 30 * MAX_TTL_MS])
def test_an_expired_message_is_nobodys_fault_however_old(expires_ms: int) -> None:
    # A node that wakes from suspend (or whose clock jumps ahead) finds its queued gossip old:
    # blaming the neighbours that sent it would ban honest peers.
    with pytest.raises(Invalid) as caught:
        open_at(signed(encode(ping_wire(expires_ms=expires_ms))))
    assert (caught.value.reason, caught.value.peer_fault) == ("expired", False)
