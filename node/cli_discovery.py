"""``idlegrid dht ...``: ask the running node's Kademlia DHT for a peer or for providers; and the
table of ``idlegrid market``: the workers this node has discovered."""

from __future__ import annotations

import urllib.parse
from typing import Any

import click

from config.schema import ROLES
from consensus.settlement.units import format_rate
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


def human_market(p: dict[str, Any]) -> str:
    """The order book as ``idlegrid market`` prints it, one row per offer."""
    rows = [("WORKER", "NAME", "STATUS", "GPU CLASS", "COUNT", "VRAM", "PRICE PER GPU",
             "REGION", "RTT", "SCORE", "QOS")]  # fmt: skip
    flags = []
    for w in p["workers"]:
        qos = w.get("qos")
        if qos and qos["flagged"]:
            flags.append(f"  {w['peer_id']}: flagged: {qos['reason']}")
        rtt = "-" if w.get("rtt_ms") is None else f"{w['rtt_ms']} ms"
        for o in w["offers"]:
            vram = f"{o['vram_mb'] // 1024} GB" if o["vram_mb"] else "-"
            status = "blocked" if w.get("blocked") else w["status"]
            rows.append((w["peer_id"], _said(w.get("name")), status, o["gpu_class"],
                         str(o["count"]), vram,
                         format_rate(int(o["price_wei_per_s"]), p.get("token")),
                         _said(w["region"]), rtt, str(w.get("score") or "-"),
                         _qos_cell(qos)))  # fmt: skip
    blocked = sum(1 for w in p["workers"] if w.get("blocked"))
    count = len(p["workers"]) - blocked  # a blocked one is out of every auction
    footer = f"{count} worker{'' if count == 1 else 's'}"
    return "\n".join([table(rows), *flags, footer + (f" ({blocked} blocked)" if blocked else "")])


def _said(text: str | None, limit: int = 24) -> str:
    """What a worker says of itself (name, region), unchecked by anyone: printable characters
    only, and short, so no peer can move the cursor or stretch the table."""
    clean = "".join(c if c.isprintable() and not c.isspace() else " " for c in text or "")
    clean = " ".join(clean.split())
    return (clean[: limit - 1] + "~" if len(clean) > limit else clean) or "-"


def _qos_cell(qos: dict[str, Any] | None) -> str:
    """Sentries' word on a worker: measured score, or why it is flagged, or no answer."""
    if not qos:
        return "-"
    if qos["flagged"]:
        return f"FLAGGED (measured {qos['measured']})"
    if not qos["answered"]:
        return f"no answer ({qos['probes']} probes)" if not qos["busy"] else "busy"
    return f"ok (measured {qos['measured']}, {qos['latency_ms']} ms)"
