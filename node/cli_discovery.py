"""``idlegrid dht ...``: ask the running node's Kademlia DHT for a peer or for providers."""

from __future__ import annotations

import urllib.parse
from typing import Any

import click

from config.schema import ROLES
from node.cli_base import BadInput, emit, home_option, json_option, table
from node.client import ApiClient
from node.home import Home, resolve_home


def _get(home_dir: str | None, path: str, **query: str) -> Any:
    suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
    return ApiClient(Home(resolve_home(home_dir)), timeout_s=30).get(path + suffix)


@click.group()
def dht() -> None:
    """The Kademlia DHT: find peers and providers beyond those gossip has shown."""


@dht.command("status")
@home_option
@json_option
def dht_status(home_dir: str | None, as_json: bool) -> None:
    """Mode and routing table size."""
    payload = _get(home_dir, "/v1/dht")
    emit(as_json, payload, lambda p: f"mode {p['mode']}, {p['routing_table']} peers in table")


@dht.command("find")
@click.argument("peer_id")
@home_option
@json_option
def dht_find(peer_id: str, home_dir: str | None, as_json: bool) -> None:
    """Addresses of PEER_ID (the node also dials it); from the peer book, else the DHT."""
    if not peer_id.startswith(("12D3Koo", "Qm")):
        raise BadInput(f"not a peer id (12D3Koo... or Qm...): {peer_id!r}")
    payload = _get(home_dir, "/v1/dht/find", peer_id=peer_id)
    emit(as_json, payload, lambda p: "\n".join(p["addrs"]) or f"{peer_id}: not found")


@dht.command("providers")
@click.argument("role", type=click.Choice(ROLES))
@home_option
@json_option
def dht_providers(role: str, home_dir: str | None, as_json: bool) -> None:
    """Nodes that announced ROLE in the DHT."""
    payload = _get(home_dir, "/v1/dht/providers", role=role)
    emit(as_json, payload, _human_providers)


def _human_providers(p: dict[str, Any]) -> str:
    rows = [("PEER", "ADDRESS")]
    rows += [(x["peer_id"], x["addrs"][0] if x["addrs"] else "-") for x in p["providers"]]
    return table(rows) + f"\n{len(p['providers'])} providers of {p['role']}"
