"""Message kinds: typed bodies on frozen dataclasses, parsed strictly from decoded msgpack maps.

A kind is a frozen, keyword-only dataclass that subclasses :class:`Body` and names itself in
``KIND`` (``"<area>.<name>/<major>"``). Its annotations are its schema:

==========================  =============================  ===================================
annotation                  wire form                      notes
==========================  =============================  ===================================
``int``                     msgpack int                    not bool; [-2**63, 2**64 - 1]
``Wei``                     str of decimal digits          canonical (no sign, no leading 0),
                                                           at most 2**256 - 1
``bool`` / ``str``          bool / str
``bytes``                   bin                            ``field(metadata=exact_size(n))``
``list[T]``                 array
``dict[str, T]``            map
``T | None``                nil or T
a frozen dataclass          map                            nested; same rules, no KIND
==========================  =============================  ===================================

A missing field without a default is refused; a field with a default is optional; keys the
dataclass does not know are ignored, so adding an optional field needs no new kind (a breaking
change does). Cross-field rules go in ``__post_init__``, raising :class:`Invalid`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NewType, TypeVar

from consensus.codec import type_name
from consensus.errors import Invalid

NONCE_LEN = 16
# Wei amounts exceed msgpack's 64-bit ints (2**64 wei is only ~18.4 ETH), so they travel as
# decimal strings: readable in dumps, unambiguous, and bounded by the EVM's uint256.
Wei = NewType("Wei", int)
WEI_MAX = 2**256 - 1
_WEI_TEXT = re.compile(r"0|[1-9][0-9]{0,77}")  # ASCII only: int() takes "1_0", " 1", Arabic digits
_KIND_TEXT = re.compile(r"[a-z][a-z0-9_.-]{0,100}/[0-9]{1,6}")  # ASCII: fits the 1-byte prefix
_SIZE = "idlegrid.size"
_OMIT_EMPTY = "idlegrid.omit_empty"

B = TypeVar("B", bound="Body")
T = TypeVar("T")


def exact_size(size: int) -> dict[str, int]:
    """Field metadata requiring a ``bytes`` field to be exactly ``size`` bytes long."""
    return {_SIZE: size}


def omit_empty() -> dict[str, bool]:
    """Field metadata: left off the wire while empty (its default), so that a field added to
    a kind leaves the messages that do not use it byte for byte as they were, and a node
    that predates it still reads them."""
    return {_OMIT_EMPTY: True}


@dataclass(frozen=True, kw_only=True)
class Body:
    """What every message body carries, so that every message can expire and be deduplicated.

    Attributes:
        expires_ms: Unix milliseconds after which the message is refused; bounded by the
            envelope's maximum TTL so the replay cache stays bounded too.
        nonce: 16 random bytes, unique per signer within the expiry window.
    """

    KIND: ClassVar[str] = ""
    expires_ms: int
    nonce: bytes = field(metadata=exact_size(NONCE_LEN))


@dataclass(frozen=True, kw_only=True)
class Hello(Body):
    """A node introducing itself to a peer: what it does and where it listens.

    ``chain_address`` and ``binding``: with chain settlement, the node's chain account and its
    wallet's signature binding it to the node's peer id; a sentry counts as one only where
    that account is staked as a sentry (``node.chain.sentry_set``).
    """

    KIND: ClassVar[str] = "node.hello/1"
    roles: list[str]
    version: str
    listen: list[str]
    chain_address: bytes = field(default=b"", metadata=omit_empty())
    binding: bytes = field(default=b"", metadata=omit_empty())

    def __post_init__(self) -> None:
        if (len(self.chain_address), len(self.binding)) not in ((0, 0), (20, 65)):
            raise ValueError("chain_address must be 20 bytes with a 65-byte binding, or none")


@dataclass(frozen=True, kw_only=True)
class Ping(Body):
    """A liveness probe; ``seq`` pairs a reply with its request."""

    KIND: ClassVar[str] = "node.ping/1"
    seq: int


class Registry:
    """The kinds a node understands, by ``KIND``; an envelope of any other kind is refused."""

    def __init__(self, kinds: Iterable[type[Body]] = ()) -> None:
        self._kinds: dict[str, type[Body]] = {}
        for cls in kinds:
            self.register(cls)

    def register(self, cls: type[B]) -> type[B]:
        """Adds a kind; usable as a class decorator.

        The schema is compiled here, so an unsupported annotation fails at import time rather
        than on the first message.

        Raises:
            ValueError: If the kind is already registered.
            TypeError: If ``cls`` is not a frozen dataclass subclass of Body with a valid KIND.
        """
        if not (isinstance(cls, type) and issubclass(cls, Body)):
            raise TypeError(f"{cls!r} is not a Body subclass")
        params = cls.__dict__.get("__dataclass_params__")
        if params is None or not params.frozen:
            raise TypeError(f"{cls.__name__} must itself be a @dataclass(frozen=True)")
        if not _KIND_TEXT.fullmatch(cls.KIND):
            raise TypeError(f"{cls.__name__}.KIND {cls.KIND!r} is not '<area>.<name>/<major>'")
        if cls.KIND in self._kinds:
            raise ValueError(f"kind {cls.KIND!r} is already registered")
        _schema(cls)
        self._kinds[cls.KIND] = cls
        return cls

    def get(self, kind: str) -> type[Body] | None:
        """The body class of ``kind``, or None if unknown."""
        return self._kinds.get(kind)

    def parse(self, kind: str, data: Any) -> Body:
        """Parses a decoded body map into the typed body of ``kind``.

        Raises:
            Invalid: If the kind is unknown or the map does not fit its schema.
        """
        cls = self._kinds.get(kind)
        if cls is None:
            raise Invalid("envelope.kind", f"unknown kind {kind!r}")
        return from_wire(cls, data)

    def copy(self) -> Registry:
        """An independent registry with the same kinds (for tests and private protocols)."""
        return Registry(self._kinds.values())

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._kinds))

    def __len__(self) -> int:
        return len(self._kinds)


def from_wire(cls: type[T], data: Any, what: str = "body") -> T:
    """Parses decoded msgpack ``data`` into the dataclass ``cls``, strictly by its annotations.

    Raises:
        Invalid: ``what`` names the offending field, e.g. ``body.listen[2]``.
    """
    parsed: T = _schema(cls).parse(data, what)
    return parsed


def to_wire(value: object) -> dict[str, Any]:
    """The wire map of a body (or nested dataclass): the inverse of :func:`from_wire`.

    Every field is checked against its annotation first, so that we never send what a peer
    would refuse.

    Raises:
        TypeError: A field holds the wrong type (our bug).
        ValueError: A field holds a value out of range, e.g. a negative Wei (our bug).
    """
    dumped: dict[str, Any] = _schema(type(value)).dump(value, type(value).__name__)
    return dumped


# --- schema compilation -------------------------------------------------------------------------

_Parse = Callable[[Any, str], Any]  # (wire value, path) -> Python value; raises Invalid
_Dump = Callable[[Any, str], Any]  # (Python value, path) -> wire value; raises TypeError


@dataclass(frozen=True)
class _Type:
    parse: _Parse
    dump: _Dump


@dataclass(frozen=True)
class _Field:
    name: str
    required: bool
    type: _Type
    omit_empty: bool = False


@dataclass(frozen=True)
class _Schema:
    cls: type[Any]
    fields: tuple[_Field, ...]

    def parse(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            raise Invalid(path, f"expected map, got {type_name(data)}")
        values = {}
        for spec in self.fields:
            where = f"{path}.{spec.name}"
            if spec.name in data:
                values[spec.name] = spec.type.parse(data[spec.name], where)
            elif spec.required:
                raise Invalid(where, "missing")
        try:
            return self.cls(**values)
        except Invalid:
            raise
        except (TypeError, ValueError) as exc:  # a __post_init__ rule not written as Invalid
            raise Invalid(path, str(exc) or type(exc).__name__) from None

    def dump(self, value: Any, path: str) -> dict[str, Any]:
        if type(value) is not self.cls:
            raise TypeError(f"{path}: expected {self.cls.__name__}, got {type_name(value)}")
        return {
            spec.name: spec.type.dump(getattr(value, spec.name), f"{path}.{spec.name}")
            for spec in self.fields
            if not (spec.omit_empty and not getattr(value, spec.name))
        }


# Compiled once per class: parsing a message then costs one closure call per field.
_SCHEMAS: dict[type[Any], _Schema] = {}


def _schema(cls: type[Any]) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = _compile_schema(cls)
    return schema


def _compile_schema(cls: type[Any]) -> _Schema:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    specs = []
    for spec in dataclasses.fields(cls):
        if not spec.init:
            raise TypeError(f"{cls.__name__}.{spec.name}: init=False fields cannot be parsed")
        required = spec.default is dataclasses.MISSING and (
            spec.default_factory is dataclasses.MISSING
        )
        compiled = _compile(hints[spec.name], spec.metadata.get(_SIZE))
        omit = bool(spec.metadata.get(_OMIT_EMPTY))
        if omit and required:
            raise TypeError(f"{cls.__name__}.{spec.name}: an omitted field needs a default")
        specs.append(_Field(spec.name, required, compiled, omit))
    return _Schema(cls, tuple(specs))


def _compile(annotation: Any, size: int | None = None) -> _Type:
    if size is not None and annotation not in (bytes, bytes | None):
        raise TypeError(f"exact_size applies to bytes fields, not {annotation!r}")
    if annotation is Wei:
        return _Type(_parse_wei, _dump_wei)
    if annotation in (bool, int, str, bytes):
        return _scalar(annotation, size)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and len(args) == 1:
        return _list(_compile(args[0]))
    if origin is dict and len(args) == 2 and args[0] is str:
        return _dict(_compile(args[1]))
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return _optional(_compile(inner, size))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if issubclass(annotation, Body):
            raise TypeError(f"{annotation.__name__}: a Body cannot be nested in another")
        nested = _schema(annotation)
        return _Type(nested.parse, nested.dump)
    raise TypeError(f"unsupported field type {annotation!r}")


def _scalar(kind: type, size: int | None) -> _Type:
    # Exact type, not isinstance: bool is an int, and True must not pass as 1.
    def parse(value: Any, path: str) -> Any:
        if type(value) is not kind:
            raise Invalid(path, f"expected {kind.__name__}, got {type_name(value)}")
        if size is not None and isinstance(value, bytes) and len(value) != size:
            raise Invalid(path, f"expected {size} bytes, got {len(value)}")
        return value

    def dump(value: Any, path: str) -> Any:
        if type(value) is not kind:
            raise TypeError(f"{path}: expected {kind.__name__}, got {type_name(value)}")
        if size is not None and isinstance(value, bytes) and len(value) != size:
            raise ValueError(f"{path}: expected {size} bytes, got {len(value)}")
        return value

    return _Type(parse, dump)


def _list(item: _Type) -> _Type:
    def parse(value: Any, path: str) -> Any:
        if type(value) is not list:
            raise Invalid(path, f"expected list, got {type_name(value)}")
        return [item.parse(element, f"{path}[{index}]") for index, element in enumerate(value)]

    def dump(value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{path}: expected list, got {type_name(value)}")
        return [item.dump(element, f"{path}[{index}]") for index, element in enumerate(value)]

    return _Type(parse, dump)


def _dict(item: _Type) -> _Type:
    def parse(value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise Invalid(path, f"expected map, got {type_name(value)}")
        # The codec already refuses non-str keys; keys are quoted (bounded) as peer-chosen text.
        return {key: item.parse(element, f"{path}[{key[:40]!r}]") for key, element in value.items()}

    def dump(value: Any, path: str) -> Any:
        if not isinstance(value, dict) or not all(type(key) is str for key in value):
            raise TypeError(f"{path}: expected dict with str keys, got {type_name(value)}")
        return {key: item.dump(element, f"{path}[{key!r}]") for key, element in value.items()}

    return _Type(parse, dump)


def _optional(inner: _Type) -> _Type:
    def parse(value: Any, path: str) -> Any:
        return None if value is None else inner.parse(value, path)

    def dump(value: Any, path: str) -> Any:
        return None if value is None else inner.dump(value, path)

    return _Type(parse, dump)


def _parse_wei(value: Any, path: str) -> int:
    if type(value) is not str:
        raise Invalid(path, f"expected wei as a decimal str, got {type_name(value)}")
    if not _WEI_TEXT.fullmatch(value):
        raise Invalid(path, "wei must be canonical decimal digits (no sign, no leading zero)")
    amount = int(value)
    if amount > WEI_MAX:
        raise Invalid(path, "wei above 2**256 - 1")
    return amount


def _dump_wei(value: Any, path: str) -> str:
    if type(value) is not int:
        raise TypeError(f"{path}: expected wei as int, got {type_name(value)}")
    if not 0 <= value <= WEI_MAX:
        raise ValueError(f"{path}: wei {value} outside [0, 2**256 - 1]")
    return str(value)


# Last, because registering compiles the schema with the functions above.
DEFAULT_REGISTRY = Registry([Hello, Ping])
