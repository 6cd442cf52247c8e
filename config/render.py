"""Turns settings back into text: the ``config show`` table and a commented ``idlegrid.toml``."""

from __future__ import annotations

import dataclasses
from typing import Any

from config.load import Loaded, env_name
from config.schema import SECTIONS, Settings


def flat(settings: Settings) -> dict[str, Any]:
    """``{"section.key": value}`` with tuples as lists, ready for JSON."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        for name, value in dataclasses.asdict(getattr(settings, section)).items():
            out[f"{section}.{name}"] = list(value) if isinstance(value, tuple) else value
    return out


def show_rows(loaded: Loaded) -> list[tuple[str, str, str]]:
    """(key, value as TOML, source) rows for the human ``config show`` output."""
    return [(k, toml_value(v), loaded.sources[k]) for k, v in flat(loaded.settings).items()]


def from_env(loaded: Loaded) -> list[tuple[str, str, str]]:
    """(key, value as TOML, variable) for each key an ``IDLEGRID_*`` variable moved off its
    default: the ones :func:`commented_toml` writes uncommented, so that ``idlegrid init`` can
    say that a variable exported for one shell now stays with the data dir."""
    defaults, current = flat(Settings()), flat(loaded.settings)
    return [
        (key, toml_value(current[key]), source.removeprefix("env "))
        for key, source in loaded.sources.items()
        if source.startswith("env ") and current[key] != defaults[key]
    ]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def commented_toml(settings: Settings) -> str:
    """A config file with every key, its documentation and its environment variable.

    Keys equal to their default are written commented out, so a later release's better default
    still reaches a user who never changed that key.
    """
    defaults, current = flat(Settings()), flat(settings)
    lines = ["# idlegrid node settings. Precedence: flags > IDLEGRID_* env > this file.", ""]
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            value = current[key]
            lines.append(f"# {f.metadata['doc']} (env {env_name(key)})")
            prefix = "# " if value == defaults[key] else ""
            lines.append(f"{prefix}{f.name} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
