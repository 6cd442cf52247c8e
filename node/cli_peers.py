"""``idlegrid peers [block|unblock]``: the peers a node knows, and the operator's block list."""

from __future__ import annotations

import re
import time
from typing import Any, Final

import click

from consensus.errors import Invalid
from consensus.peer_id import public_key_from_peer_id
from node.cli_base import BadInput, emit, home_option, json_option, table
from node.client import ApiClient
from node.home import Home, resolve_home

_DURATION: Final = re.compile(r"([0-9]+)\s*(s|m|h|d)?")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90`` / ``90s`` / ``10m`` / ``2h`` / ``7d`` -> whole seconds (at least 1).

    Raises:
        BadInput: anything else, naming the option.
    """
    match = _DURATION.fullmatch(text.strip())
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"] if match else 0
    if seconds < 1:
        raise BadInput(f'--for: expected a duration such as 90s, 10m, 2h or 7d, got "{text}"')
    return seconds


def check_peer_id(peer_id: str) -> str:
    try:
        public_key_from_peer_id(peer_id)
    except (Invalid, ValueError) as exc:
        raise BadInput(f"PEER_ID: not a peer id (12D3KooW...): {peer_id!r} ({exc})") from None
    return peer_id


def _api(home_dir: str | None) -> ApiClient:
    return ApiClient(Home(resolve_home(home_dir)))


@click.group(invoke_without_command=True)
@home_option
@json_option
@click.pass_context
def peers(ctx: click.Context, home_dir: str | None, as_json: bool) -> None:
    """Peers this node knows: id, addresses, latency, score, roles; and blocked peers."""
    if ctx.invoked_subcommand is None:
        emit(as_json, _api(home_dir).get("/v1/peers"), _human_peers)


@peers.command("block")
@click.argument("peer_id")
@click.option("--for", "duration", help="lift the block after this long (90s, 10m, 2h, 7d)")
@click.option("--reason", default="", help="a note kept with the block")
@home_option
@json_option
def peers_block(
    peer_id: str, duration: str | None, reason: str, home_dir: str | None, as_json: bool
) -> None:
    """Disconnect PEER_ID now and refuse it (no dial, no connection, no gossip, no requests)
    until unblocked or, with --for, until the time is up; kept across restarts."""
    body: dict[str, Any] = {"peer_id": check_peer_id(peer_id), "reason": reason}
    if duration is not None:
        body["for_s"] = parse_duration(duration)
    payload = _api(home_dir).post("/v1/peers/block", body)
    emit(as_json, payload, lambda p: f"blocked {peer_id} {_until(p['blocked']['until_ms'])}")


@peers.command("unblock")
@click.argument("peer_id")
@home_option
@json_option
def peers_unblock(peer_id: str, home_dir: str | None, as_json: bool) -> None:
    """Lift the block on PEER_ID; it is dialled again like any other peer."""
    payload = _api(home_dir).post("/v1/peers/unblock", {"peer_id": check_peer_id(peer_id)})
    done = "unblocked" if payload["unblocked"] else "was not blocked:"
    emit(as_json, payload, lambda _: f"{done} {peer_id}")


def _until(until_ms: int | None) -> str:
    if until_ms is None:
        return "until unblocked"
    return "until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until_ms / 1000))


def _human_peers(p: dict[str, Any]) -> str:
    rows = [("PEER", "STATE", "RTT", "SCORE", "ROLES", "ADDRESS")]
    for peer in p["peers"]:
        state = "connected" if peer["connected"] else ("online" if peer["online"] else "offline")
        if peer.get("blocked") or peer.get("banned"):
            state = "blocked" if peer.get("blocked") else "banned"
        if peer.get("other_network"):
            state = f"network {peer['other_network']}"  # hung up on: not ours
        rtt = "-" if peer["rtt_ms"] is None else f"{peer['rtt_ms']} ms"
        addr = peer["addrs"][0].split("/p2p/")[0] if peer["addrs"] else "-"
        roles = ",".join(peer["roles"]) or "-"
        rows.append((peer["peer_id"], state, rtt, str(peer["score"]), roles, addr))
    out = table(rows) + f"\n{len(p['peers'])} peers"
    blocked = [b for b in p.get("blocked", []) if b["source"] == "operator"]
    if blocked:
        out += f", {len(blocked)} blocked by you:"
        for b in blocked:
            note = f" ({b['reason']})" if b["reason"] else ""
            out += f"\n  {b['peer_id']} {_until(b['until_ms'])}{note}"
    return out
