"""The settings a node reads, as frozen dataclasses: one class per TOML table.

Each field carries its documentation and its check in ``metadata`` so that the loader, the
``config show`` command, the README table and the commented ``idlegrid.toml`` written by
``idlegrid init`` all come from this one place. To add a setting, add a field here: nothing else
needs to change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("requester", "worker", "sentry")
LOG_LEVELS = ("debug", "info", "warning", "error")

Check = Callable[[Any], str | None]
"""Returns None when the value is acceptable, else what was expected (shown to the user)."""


def setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declares a field with its default, its one-line documentation and an optional check."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, list | tuple):
        items = tuple(default)
        return field(default_factory=lambda: items, metadata=meta)
    return field(default=default, metadata=meta)


def int_range(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"an integer in {low}..{high}"

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def roles_check(value: Any) -> str | None:
    if not value:
        return f"at least one role of {', '.join(ROLES)}"
    unknown = [r for r in value if r not in ROLES]
    if unknown:
        return f"roles from {', '.join(ROLES)} (unknown: {', '.join(unknown)})"
    if len(set(value)) != len(value):
        return "each role at most once"
    return None


def loopback_check(value: Any) -> str | None:
    # The local API can move money and read job data; it must never face a network.
    if value == "localhost":
        return None
    try:
        if ipaddress.ip_address(value).is_loopback:
            return None
    except ValueError:
        pass
    return "a loopback address such as 127.0.0.1 (the local API is never exposed)"


@dataclass(frozen=True)
class NodeSettings:
    roles: tuple[str, ...] = setting(
        ("requester",),
        "roles this node plays: requester, worker, sentry (combine freely)",
        roles_check,
    )
    log_level: str = setting("info", "console and log file level", one_of(LOG_LEVELS))
    name: str = setting("", "a human label shown to peers and in the explorer (optional)")


@dataclass(frozen=True)
class ApiSettings:
    host: str = setting(
        "127.0.0.1", "address of the local HTTP API (loopback only)", loopback_check
    )
    port: int = setting(
        0,
        "port of the local HTTP API; 0 picks a free one and records it in api.json",
        int_range(0, 65535),
    )


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


SECTIONS: dict[str, type[Any]] = {"node": NodeSettings, "api": ApiSettings}
