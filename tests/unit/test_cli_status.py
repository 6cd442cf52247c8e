"""``idlegrid status``'s text: each role's services under the roles, as ``--json`` has them."""

from __future__ import annotations

from node.cli import _human_status


def test_status_lists_each_roles_services() -> None:
    text = _human_status({
        "pid": 7, "uptime_s": 3.0, "version": "0", "peer_id": "12D3KooW", "address": "0x1",
        "roles": ["worker", "sentry"], "home": "/h", "api": "http://127.0.0.1:1",
        "services": {"worker": ["presence", "bids"], "sentry": ["challenges"]},
    })  # fmt: skip
    lines = text.splitlines()
    at = lines.index("roles     worker, sentry")
    assert lines[at + 1 : at + 3] == ["  worker  presence, bids", "  sentry  challenges"]
