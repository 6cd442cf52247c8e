"""Strict msgpack: bounded decoding of what peers send, deterministic encoding of what we send.

Everything a peer sends is decoded here first, so the limits below are the whole defence against
memory and CPU exhaustion by a single message. Only the plain msgpack types are accepted (nil,
bool, int, str, bin, array, map with unique ``str`` keys); ext types (timestamps included) and
floats are refused, because money and times are integers (DESIGN.md, "Identity and messages").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack

from consensus.errors import Invalid

_SCALARS = (type(None), bool, int, str, bytes)
# Long enough for a timestamp (12 bytes), so it decodes and is refused by name below; any other
# ext is refused by the hook, and a long one is refused before its payload is copied.
_MAX_EXT_LEN = 16
_TIMESTAMP_EXT = -1


@dataclass(frozen=True)
class Limits:
    """Hard bounds for one decoded message.

    The defaults fit every message kind we have with room to spare, and keep the worst-case
    decoded size of a message within a few MiB of Python objects.

    Attributes:
        max_bytes: The whole encoded message; under libp2p's 1 MiB gossip limit, with headroom.
        max_depth: Nested containers (the top-level array or map counts as 1).
        max_str_len: Bytes of one str.
        max_bin_len: Bytes of one bin.
        max_array_len: Elements of one array.
        max_map_len: Entries of one map.
    """

    max_bytes: int = 512 * 1024
    max_depth: int = 8
    max_str_len: int = 64 * 1024
    max_bin_len: int = 256 * 1024
    max_array_len: int = 1024
    max_map_len: int = 256


DEFAULT_LIMITS = Limits()


class _Refused(Exception):
    """Raised from inside msgpack's hooks, which do not know ``what`` to blame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def type_name(value: object) -> str:
    """The name used in error reasons: the Python type, as in ``expected int, got str``."""
    return "None" if value is None else type(value).__name__


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS, what: str = "body") -> Any:
    """Decodes one msgpack value from a peer, refusing anything outside ``limits``.

    Args:
        data: The bytes received, exactly one msgpack value with nothing after it.
        limits: The bounds to enforce.
        what: Which part of a message ``data`` is, named in the error.

    Returns:
        None, bool, int, str, bytes, or a list / dict (str keys) of these.

    Raises:
        Invalid: For every way ``data`` can be wrong; never any other exception.
    """
    if len(data) > limits.max_bytes:
        raise Invalid(what, f"too large: {len(data)} bytes > {limits.max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=_MAX_EXT_LEN,
            ext_hook=_refuse_ext,
            object_pairs_hook=_map_from_pairs,
        )
    except _Refused as exc:
        raise Invalid(what, exc.reason) from None
    except msgpack.ExtraData:
        raise Invalid(what, "trailing bytes after the value") from None
    except msgpack.StackError:
        raise Invalid(what, f"nested deeper than {limits.max_depth}") from None
    except UnicodeDecodeError:
        raise Invalid(what, "str is not valid utf-8") from None
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        text = str(exc) or type(exc).__name__
        # msgpack reports its length limits as ValueError("N exceeds max_x_len(M)"): say so.
        raise Invalid(
            what, text if "exceeds max_" in text else f"malformed msgpack: {text}"
        ) from None
    _check_tree(value, limits.max_depth, what)
    return value


def encode(value: Any) -> bytes:
    """Encodes our own value deterministically: map keys sorted, ints minimal, str as str.

    Equal values therefore give equal bytes, hence equal signatures and message ids.

    Raises:
        TypeError: On a float, a non-str map key or a type msgpack cannot carry (our bug).
        OverflowError: On an int outside [-2**63, 2**64 - 1] (our bug; see ``kinds.Wei``).
    """
    return msgpack.packb(_canonical(value), use_bin_type=True)  # type: ignore[no-any-return]


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        raise TypeError("floats are not allowed on the wire: use integers (wei, milliseconds)")
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str:
                raise TypeError(f"map keys must be str, got {type_name(key)}")
        # Python orders str by code point, which is also the order of their utf-8 bytes.
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _Refused(f"ext type {code} not allowed")


def _map_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    # strict_map_key already refuses every key but str and bytes; bytes keys are refused here.
    result = dict(pairs)
    for key in result:
        if type(key) is not str:
            raise _Refused(f"map key must be str, got {type_name(key)}")
    # Different decoders keep the first or the last duplicate: refuse the ambiguity.
    if len(result) != len(pairs):
        raise _Refused("duplicate map key")
    return result


def _check_tree(value: Any, max_depth: int, what: str) -> None:
    """Enforces depth and the allowed types, iteratively so depth cannot blow the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, above = stack.pop()
        if isinstance(node, _SCALARS):
            continue
        if isinstance(node, list):
            children: Any = node
        elif isinstance(node, dict):
            children = node.values()
        elif isinstance(node, msgpack.Timestamp):
            raise Invalid(what, f"ext type {_TIMESTAMP_EXT} (timestamp) not allowed")
        elif isinstance(node, float):
            raise Invalid(what, "float not allowed (money and times are integers)")
        else:
            raise Invalid(what, f"{type_name(node)} not allowed")
        if above >= max_depth:
            raise Invalid(what, f"nested deeper than {max_depth}")
        stack.extend((child, above + 1) for child in children)
