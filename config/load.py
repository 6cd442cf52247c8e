"""Loads settings: defaults < ``idlegrid.toml`` < ``IDLEGRID_*`` environment < command-line flags.

Every value remembers where it came from, so ``idlegrid config show`` can answer "why is the
port 9000?" and an error can say which file, variable or flag to fix. Anything unknown or
ill-typed is refused with :class:`ConfigError` rather than ignored: a typo in a money-handling
daemon's config must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from config.schema import CROSS_CHECKS, SECTIONS, Settings

ENV_PREFIX = "IDLEGRID_"
# Variables that choose *how* to load, not what to load; they are not config keys.
RESERVED_ENV = frozenset({"IDLEGRID_HOME", "IDLEGRID_PASSPHRASE", "IDLEGRID_ANVIL"})


class ConfigError(Exception):
    """A setting that cannot be used: names the key, the value, what was expected and the source."""

    def __init__(self, key: str, value: Any, expected: str, source: str) -> None:
        self.key, self.value, self.expected, self.source = key, value, expected, source
        super().__init__(f"{key} = {_shown(value)} (from {source}): expected {expected}")


def _shown(value: Any) -> str:
    """A value as the user wrote it: a list as TOML would, not as a Python tuple."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True)
class Loaded:
    """The effective settings plus, for each ``section.key``, where its value came from."""

    settings: Settings
    sources: Mapping[str, str]


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def field_types(section_cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def load(
    path: Path | None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
) -> Loaded:
    """Builds the effective settings.

    Args:
        path: the TOML file; a missing file means "all defaults".
        env: environment to read ``IDLEGRID_*`` variables from (defaults to ``os.environ``).
        flags: ``{"section.key": (value, "--flag-name")}`` from the command line; ``None``
            values are skipped so that unset options do not override anything.

    Raises:
        ConfigError: unknown key, wrong type, or a value outside its range.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}
    if path is not None and path.exists():
        raw.update(_read_file(path))
    raw.update(_read_env(env))
    for key, (value, flag) in (flags or {}).items():
        if value is not None:
            _require_known(key, value, f"flag {flag}")
            raw[key] = (value, f"flag {flag}")
    return _build(raw)


def _toml_hint(exc: tomllib.TOMLDecodeError) -> str:
    """What to do about the mistake a newcomer makes most: appending a table that ``idlegrid
    init``'s file already has."""
    twice = re.search(r"Cannot declare \('([^']+)',?\) twice", str(exc))
    if twice is None:
        return ""
    return f": the file already has a [{twice.group(1)}] table; put the key under that one"


def _read_file(path: Path) -> dict[str, tuple[Any, str]]:
    source = f"file {path}"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        expected = f"valid TOML ({exc}){_toml_hint(exc)}"
        raise ConfigError("(file)", str(path), expected, source) from exc
    out: dict[str, tuple[Any, str]] = {}
    for section, table in doc.items():
        if section not in SECTIONS:
            raise ConfigError(section, table, f"a table among {', '.join(SECTIONS)}", source)
        if not isinstance(table, dict):
            raise ConfigError(section, table, "a table, e.g. [" + section + "]", source)
        for name, value in table.items():
            key = f"{section}.{name}"
            _require_known(key, value, source)
            out[key] = (value, source)
    return out


def _read_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    by_env = {env_name(k): k for k in all_keys()}
    out: dict[str, tuple[Any, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        if name not in by_env:
            raise ConfigError(name, value, _known(name, sorted(by_env), "variable"), "environment")
        out[by_env[name]] = (value, f"env {name}")
    return out


def _require_known(key: str, value: Any, source: str) -> None:
    if key not in all_keys():
        raise ConfigError(key, value, _known(key, list(all_keys()), "key"), source)


def _known(name: str, names: list[str], what: str) -> str:
    """What an unknown ``name`` should have been: the closest known ones first, if any are
    close (``worker.price`` -> ``worker.price_wei_per_s``), else where to find the list."""
    cut = len(ENV_PREFIX) if name.startswith(ENV_PREFIX) else 0  # compare what differs
    bare = {n[cut:]: n for n in names}
    near = [n for n in names if n.startswith(name + "_")]  # a name cut short
    close = difflib.get_close_matches(name[cut:], list(bare), n=3, cutoff=0.6)
    near = (near + [bare[n] for n in close if bare[n] not in near])[:3]
    if near:
        return f"a known {what}; did you mean {' or '.join(near)}?"
    return f"a known {what} (`idlegrid config show` lists them all)"


def _build(raw: Mapping[str, tuple[Any, str]]) -> Loaded:
    sections: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        types = field_types(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key not in raw:
                sources[key] = "default"
                continue
            value, source = raw[key]
            values[f.name] = _coerce(key, value, types[f.name], source)
            _check(key, values[f.name], f.metadata.get("check"), source)
            sources[key] = source
        sections[section] = cls(**values)
    settings = Settings(**sections)
    for key, rule in CROSS_CHECKS:
        if (expected := rule(settings)) is not None:
            section, name = key.split(".")
            raise ConfigError(
                key, getattr(getattr(settings, section), name), expected, sources[key]
            )
    return Loaded(settings, sources)


def _check(key: str, value: Any, check: Any, source: str) -> None:
    if check is not None and (expected := check(value)) is not None:
        raise ConfigError(key, value, expected, source)


_UNIT_DIGITS = {"wei": 0, "gwei": 9, "eth": 18}
_AMOUNT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(wei|gwei|eth)\s*", re.IGNORECASE)


def _wei_hint(key: str, value: Any) -> str:
    """For an amount written with a unit where wei are wanted, the integer to write instead
    (job specs take units; settings stay integers, which also suit a token's base units)."""
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) and "_wei" in key else None
    if match is None:
        return ""
    wei = Decimal(match.group(1)).scaleb(_UNIT_DIGITS[match.group(2).lower()])
    if wei != wei.to_integral_value():
        return f" of wei ({value.strip()} is finer than one wei)"
    return f" of wei: write {int(wei)} for {value.strip()}"


def _coerce(key: str, value: Any, typ: Any, source: str) -> Any:
    """Converts a TOML value or an environment/flag string to the field's type, or refuses."""
    from_text = isinstance(value, str) and not source.startswith("file")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(key, value, "true or false", source)
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(key, value, "an integer" + _wei_hint(key, value), source)
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string", source)
    if typing.get_origin(typ) is tuple:
        if from_text:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, value, "a list of strings", source)
    raise TypeError(f"config field {key} has unsupported type {typ!r}")  # our bug, not the user's
