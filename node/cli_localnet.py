"""``idlegrid localnet start|status|stop|logs``: a whole network on this machine.

A requester, workers and a sentry (counts configurable), each its own daemon with its own data
dir under ``--dir``, bootstrapped to each other on 127.0.0.1, sharing one chain (anvil when
installed, else the embedded EVM served over JSON-RPC) with the settlement contract deployed,
every wallet funded and workers and sentries staked. See :mod:`node.localnet`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from consensus.settlement.units import format_wei
from node.cli_base import BadInput, Failure, emit, json_option, short_peer, table
from node.client import ApiClient
from node.home import Home, HomeError
from node.localnet import net
from node.localnet.procs import POLL_S
from node.localnet.state import State

dir_option = click.option(
    "--dir",
    "root",
    default=".localnet",
    show_default=True,
    type=click.Path(file_okay=False),
    help="where the localnet keeps its nodes' data dirs, logs and state",
)


def _root(root: str) -> Path:
    return Path(root).expanduser().resolve()


def _state(root: str) -> State:
    try:
        return net.require(_root(root))
    except net.LocalnetError as exc:
        raise Failure(str(exc)) from None


@click.group("localnet")
def localnet() -> None:
    """A local network: requester, workers, sentry and a chain, on this machine."""


@localnet.command("start")
@dir_option
@click.option("--requesters", type=click.IntRange(1, 20), default=1, show_default=True)
@click.option("--workers", type=click.IntRange(0, 50), default=3, show_default=True)
@click.option("--sentries", type=click.IntRange(0, 20), default=1, show_default=True)
@click.option("--chain", "chain_mode", type=click.Choice(["auto", "anvil", "embedded"]),
              default="auto", show_default=True,
              help="auto: anvil when installed, else the embedded EVM over JSON-RPC")  # fmt: skip
@json_option
def start(  # noqa: PLR0917 - one parameter per click option
    root: str, requesters: int, workers: int, sentries: int, chain_mode: str, as_json: bool
) -> None:
    """Start the chain and every node as detached daemons; return once all answer."""
    path = _root(root)
    try:
        cleared = net.check_free(path)
        if cleared and not as_json:
            click.echo(cleared)
        started = time.monotonic()
        state = net.start(path, requesters, workers, sentries, chain_mode)
    except net.LocalnetError as exc:
        raise Failure(str(exc)) from None
    payload = net.status(state) | {"start_s": round(time.monotonic() - started, 2)}
    emit(as_json, payload, lambda p: _human_status(p) + _next_steps(p))


@localnet.command("status")
@dir_option
@json_option
def status(root: str, as_json: bool) -> None:
    """Each node (role, pid, API port, peers, price, balance) and the chain; exit 1 unless all
    run. A running worker's price is the one the network hears now (after an edit of its
    idlegrid.toml and a restart), else the one it was started with."""
    payload = live_prices(net.status(_state(root)))
    emit(as_json, payload, _human_status)
    if not payload["running"]:
        raise SystemExit(1)


@localnet.command("stop")
@dir_option
@json_option
def stop(root: str, as_json: bool) -> None:
    """SIGTERM every daemon and the chain, wait, SIGKILL what is left."""
    state = _state(root)
    outcome = net.stop(state)
    emit(as_json, {"dir": state.dir, "processes": outcome},
         lambda p: table([("PROCESS", "OUTCOME"), *p["processes"].items()]))  # fmt: skip


@localnet.command("logs")
@click.argument("node")
@dir_option
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines until it stops")
def logs(node: str, root: str, follow: bool) -> None:
    """Print NODE's log (a node's name as `localnet status` shows, or `chain`)."""
    state = _state(root)
    if node == "chain":
        path, proc = Path(state.chain.log), state.chain.proc
    else:
        try:
            info = state.node(node)
        except KeyError as exc:
            raise BadInput(f"NODE: {exc.args[0]}, or chain") from None
        path, proc = info.log, info.proc
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - followed below
    except OSError as exc:
        raise Failure(f"{path}: {exc.strerror}") from None
    with f:
        click.echo(f.read(), nl=False)
        while follow and proc.alive():
            chunk = f.read()
            if chunk:
                click.echo(chunk, nl=False)
            else:
                time.sleep(POLL_S)  # a file has nothing to wait on; tail -f polls too
        click.echo(f.read(), nl=False)


def _market_of(home: str) -> Any:
    return ApiClient(Home(Path(home)), timeout_s=3.0).get("/v1/market")


def live_prices(
    payload: dict[str, Any], market_of: Callable[[str], Any] = _market_of
) -> dict[str, Any]:
    """Replaces each running worker's price from localnet.json (written at ``start``) by the
    price its presence announces now, as a running node's market shows it. Requesters are
    asked first: theirs is the market that awards."""
    nodes = payload["nodes"]
    wanted = {n["peer_id"] for n in nodes if n["role"] == "worker" and n["alive"]}
    heard: dict[str, str] = {}
    for n in sorted((n for n in nodes if n["alive"]), key=lambda n: n["role"] != "requester"):
        if wanted <= heard.keys():
            break
        try:
            workers = market_of(n["home"])["workers"]
        except HomeError:
            continue
        for w in workers:  # the first answer stands: requesters' markets are asked first
            if w["offers"]:
                heard.setdefault(w["peer_id"], w["offers"][0]["price_wei_per_s"])
    for n in nodes:
        if n["peer_id"] in wanted and n["peer_id"] in heard:
            n["price_wei_per_s"] = heard[n["peer_id"]]
    return payload


def _human_status(p: dict[str, Any]) -> str:
    c = p["chain"]
    chain_state = f"block {c['block']}" if c["alive"] else "not running"
    lines = [
        f"localnet in {p['dir']}: "
        + ("running" if p["running"] else "stopped" if p["stale"] else "DEGRADED"),
        f"chain  {c['kind']} {c['url']} (chain id {c['chain_id']}, pid {c['pid']}), {chain_state}",
        f"       contract {c['contract']}",
        "",
    ]
    rows: list[tuple[str, ...]] = [
        ("NODE", "ROLE", "PID", "ALIVE", "API", "PEER ID", "PEERS", "PRICE/S", "BALANCE")
    ]
    for n in p["nodes"]:
        peers = "-" if n["connected"] is None else str(len(n["connected"]))
        price = format_wei(int(n["price_wei_per_s"]), "gwei") if n["price_wei_per_s"] else "-"
        balance = format_wei(int(n["balance_wei"])) if n["balance_wei"] else "-"
        rows.append((n["name"], n["role"], str(n["pid"]), "yes" if n["alive"] else "NO",
                     str(n["api_port"] or "-"), short_peer(n["peer_id"]), peers, price,
                     balance))  # fmt: skip
    return "\n".join(lines) + table(rows)


def _next_steps(p: dict[str, Any]) -> str:
    requester = next((n for n in p["nodes"] if n["role"] == "requester"), p["nodes"][0])
    return (
        f"\n\nstarted in {p['start_s']} s; logs: idlegrid localnet logs NODE --dir {p['dir']}\n"
        f"submit a job:  idlegrid job submit examples/exec-wordcount/job.toml --wait "
        f"--home {requester['home']}\n"
        f"stop:          idlegrid localnet stop --dir {p['dir']}"
    )
