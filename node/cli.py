"""The ``idlegrid`` command.

Exit codes: 0 success, 1 failure (not running, locked, bad key file, daemon error), 2 usage or
bad input (unknown flag, bad config). Read commands print for people by default and JSON with
``--json``.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import signal
import sys
import time
from importlib import metadata
from typing import Any

import click

from config import Loaded, env_name, load
from config.render import commented_toml, flat, from_env, show_rows
from node import __version__, identity
from node.cli_base import (
    BadInput,
    Cli,
    Failure,
    api_port_option,
    emit,
    home_option,
    json_option,
    role_option,
    table,
)
from node.cli_data import data
from node.cli_discovery import dht
from node.cli_discovery import human_market as _human_market
from node.cli_dispute import dispute
from node.cli_gpu import check_sandbox, gpu
from node.cli_job import bids, job, worker
from node.cli_localnet import localnet
from node.cli_peers import peers
from node.cli_wallet import WALLET_COMMANDS, settlement
from node.client import ApiClient, NotRunning, start_hint
from node.home import Home, resolve_home, running_pid


def load_settings(home: Home, flags: dict[str, tuple[Any, str]] | None = None) -> Loaded:
    return load(home.config, flags=flags)


def passphrase_source() -> str | None:
    if os.environ.get("IDLEGRID_PASSPHRASE"):
        return os.environ["IDLEGRID_PASSPHRASE"]
    if sys.stdin.isatty():
        return str(click.prompt("key passphrase", hide_input=True))
    return None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="idlegrid")
def cli() -> None:
    """idlegrid: an open market for idle GPU compute."""


@cli.command()
@home_option
@role_option
@api_port_option
@click.option("--encrypt", is_flag=True, help="encrypt the keys with a passphrase")
def init(home_dir: str | None, roles: tuple[str, ...], api_port: int | None, encrypt: bool) -> None:
    """Create a data dir: keys, identity, API token and a commented idlegrid.toml."""
    home = Home(resolve_home(home_dir))
    if home.is_initialised():
        click.echo(
            f"{home.root} is already initialised (peer {identity.read_identity(home)['peer_id']})"
        )
        _not_applied(home, roles, api_port)
        return
    flags = {"node.roles": (roles or None, "--role"), "api.port": (api_port, "--api-port")}
    loaded = load_settings(home, flags)
    passphrase = None
    if encrypt:
        passphrase = os.environ.get("IDLEGRID_PASSPHRASE")
        if not passphrase and not sys.stdin.isatty():
            raise BadInput("--encrypt: no terminal to ask a passphrase on: set IDLEGRID_PASSPHRASE")
        passphrase = passphrase or click.prompt(
            "new key passphrase", hide_input=True, confirmation_prompt=True
        )
    keys = identity.NodeKeys.generate()
    identity.save(home, keys, passphrase)
    home.ensure_token()
    kept = []
    if not home.config.exists():
        home.config.write_text(commented_toml(loaded.settings), encoding="utf-8")
        kept = from_env(loaded)
    click.echo(f"initialised {home.root}")
    click.echo(f"  peer id  {keys.peer_id}")
    click.echo(f"  address  {keys.address}")
    click.echo(f"  roles    {', '.join(loaded.settings.node.roles)}")
    for key, value, variable in kept:  # outlives the shell it was exported in: say so
        click.echo(f"  {key} = {value} (from {variable}, saved in {home.config.name})")
    click.echo("back up keys/ now: a lost wallet key cannot be recovered")


def _not_applied(home: Home, roles: tuple[str, ...], api_port: int | None) -> None:
    """Says which of init's options an existing data dir did not take, and where they go."""
    settings = load_settings(home, {}).settings
    if roles and tuple(roles) != tuple(settings.node.roles):
        click.echo(
            f"  roles stay {', '.join(settings.node.roles)}: --role shapes a new data dir only; "
            f"set node.roles in {home.config} or pass --role to `idlegrid node start`"
        )
    if api_port is not None and api_port != settings.api.port:
        click.echo(f"  api.port stays {settings.api.port}: set api.port in {home.config}")


@cli.group()
def node() -> None:
    """Run or stop the daemon."""


@node.command("start")
@home_option
@role_option
@api_port_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--listen", multiple=True, help="multiaddr to listen on (repeatable)")
@click.option("--bootstrap", multiple=True, help="peer multiaddr with /p2p/<id> (repeatable)")
def node_start(  # noqa: PLR0917 - one parameter per click option
    home_dir: str | None,
    roles: tuple[str, ...],
    api_port: int | None,
    log_level: str | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
) -> None:
    """Run the daemon in the foreground until SIGINT or SIGTERM."""
    from node import daemon, logs  # noqa: PLC0415 - other commands need not load trio and services
    from node.api import ApiListenError  # noqa: PLC0415
    from node.chain.errors import ChainError  # noqa: PLC0415
    from p2p.host import ListenError  # noqa: PLC0415 - nor libp2p

    home = Home(resolve_home(home_dir))
    home.require_initialised()
    flags = {
        "node.roles": (roles or None, "--role"),
        "api.port": (api_port, "--api-port"),
        "node.log_level": (log_level, "--log-level"),
        "p2p.listen": (listen or None, "--listen"),
        "p2p.bootstrap": (bootstrap or None, "--bootstrap"),
    }
    loaded = load_settings(home, flags)
    settings = loaded.settings
    if "worker" in settings.node.roles:
        check_sandbox(settings.worker, home)  # a worker that cannot jail workloads does not start
    keys = identity.load(home, passphrase_source)
    home.read_token()  # refuse a world-readable token before the API is up
    logs.setup(home.logs, settings.node.log_level)
    try:
        daemon.start(home, settings, keys)
    except ListenError as exc:
        raise Failure(_listen_fix(exc, loaded, home)) from None
    except ApiListenError as exc:
        where = loaded.sources["api.port"]
        raise Failure(f"api.port ({where}): {exc.strerror} (another node?)") from None
    except ChainError as exc:  # its message names the chain.* key
        raise Failure(str(exc)) from None


# What a refused listen address most likely means, after the OS's (or the host's) reason.
_LISTEN_HINTS = {
    errno.EADDRINUSE: " (another node?)",
    errno.EADDRNOTAVAIL: " (not an address of this machine?)",
}


def _listen_fix(exc: OSError, loaded: Loaded, home: Home) -> str:
    """One line for a ``p2p.listen`` address the OS refused: which, why, where to change it."""
    source = loaded.sources["p2p.listen"]
    if source.startswith("env "):
        where = f"change {source.removeprefix('env ')}"
    elif source.startswith("flag "):
        where = f"pass another {source.removeprefix('flag ')}"
    else:
        where = f"set p2p.listen in {home.config} or {env_name('p2p.listen')}"
    words = set(re.split(r"[\s,:]+", str(exc)))  # the host names the address it refused
    refused = next((a for a in loaded.settings.p2p.listen if a in words), None)
    example = _listen_example(exc.errno, refused)
    hint = _LISTEN_HINTS.get(exc.errno or 0, "")
    return f"p2p.listen: {exc.strerror or exc}{hint}: {where}" + (
        f", e.g. {example}" if example else ""
    )


def _listen_example(code: int | None, refused: str | None) -> str | None:
    """An address to try instead of ``refused``: the next port, or every interface."""
    head, _, port = (refused or "").rpartition("/tcp/")
    if not head or not port.isdigit():
        return None
    if code == errno.EADDRINUSE:
        return f"{head}/tcp/{int(port) + 1 if int(port) < 65535 else 0}"
    if code == errno.EADDRNOTAVAIL:
        return f"{'/ip6/::' if head.startswith('/ip6/') else '/ip4/0.0.0.0'}/tcp/{port}"
    return None


@node.command("stop")
@home_option
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait")
def node_stop(home_dir: str | None, timeout: float) -> None:
    """Ask the daemon to stop (SIGTERM) and wait until it has."""
    home = Home(resolve_home(home_dir))
    pid = running_pid(home)
    if pid is None:
        click.echo(f"no daemon is running in {home.root}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(home) is not None:
        if time.monotonic() > deadline:
            raise Failure(f"daemon pid {pid} did not stop within {timeout:g} s (kill -9 {pid})")
        time.sleep(0.05)  # polling a process we do not own; there is nothing to wait on
    click.echo(f"stopped pid {pid}")


@node.command("memory")
@home_option
@json_option
def node_memory(home_dir: str | None, as_json: bool) -> None:
    """What the running daemon holds: resident size, objects by type, top allocation lines."""
    payload = ApiClient(Home(resolve_home(home_dir))).get("/v1/debug/memory")
    emit(as_json, payload, _human_memory)


def _human_memory(p: dict[str, Any]) -> str:
    rows = [("COUNT", "TYPE"), *((str(t["count"]), t["type"]) for t in p["types"])]
    lines = [f"resident {p['rss_kib'] / 1024:.1f} MiB, {p['objects']} Python objects", table(rows)]
    if p["sites"]:
        sites = [(str(s["kib"]), str(s["count"]), s["site"]) for s in p["sites"]]
        lines.append(table([("KIB", "COUNT", "LINE"), *sites]))
    else:
        lines.append("allocation lines: start the node with PYTHONTRACEMALLOC=5 to see them")
    return "\n".join(lines)


@cli.command()
@home_option
@json_option
def status(home_dir: str | None, as_json: bool) -> None:
    """Show the running node: peer id, roles, data dir, uptime."""
    home = Home(resolve_home(home_dir))
    try:
        payload = ApiClient(home).get("/v1/status")
    except NotRunning:
        payload = {"running": False, "home": str(home.root)}
        if home.is_initialised():
            payload["peer_id"] = identity.read_identity(home)["peer_id"]
        emit(as_json, payload, lambda p: f"not running ({p['home']}): {start_hint(home)}")
        sys.exit(1)
    emit(as_json, payload, _human_status)


def _human_status(p: dict[str, Any]) -> str:
    p2p = p.get("p2p") or {}
    return "\n".join(
        [
            f"running   pid {p['pid']}, up {p['uptime_s']:.0f} s, idlegrid {p['version']}",
            f"peer id   {p['peer_id']}",
            f"address   {p['address']}",
            f"roles     {', '.join(p['roles'])}",
            *(f"  {role:<8}{', '.join(names)}" for role, names in p.get("services", {}).items()),
            f"home      {p['home']}",
            f"api       {p['api']}",
            f"network   {p2p.get('network', '-')}",
            f"p2p       {', '.join(p2p.get('addrs', []))}",
            f"peers     {p2p.get('connected_peers', 0)} connected, "
            f"{p2p.get('known_peers', 0)} known",
        ]
    )


@cli.command()
@home_option
@json_option
def market(home_dir: str | None, as_json: bool) -> None:
    """The order book: workers, their GPUs, prices per second and status."""
    payload = ApiClient(Home(resolve_home(home_dir))).get("/v1/market")
    emit(as_json, payload, _human_market)


@cli.command()
@json_option
def version(as_json: bool) -> None:
    """Print versions of idlegrid and the parts it is built on."""
    payload = {
        "idlegrid": __version__,
        "python": platform.python_version(),
        "libp2p": metadata.version("libp2p"),
        "trio": metadata.version("trio"),
        "web3": metadata.version("web3"),
    }
    emit(as_json, payload, lambda p: "  ".join(f"{k} {v}" for k, v in p.items()))


@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@home_option
@json_option
def config_show(home_dir: str | None, as_json: bool) -> None:
    """Print the effective settings and where each value came from."""
    home = Home(resolve_home(home_dir))
    loaded = load_settings(home)
    if not home.config.exists():  # a mistyped --home reads like a node on defaults
        click.echo(f"note: no {home.config}: these are the defaults (and IDLEGRID_*)", err=True)
    payload = {
        "file": str(home.config),
        "values": flat(loaded.settings),
        "sources": dict(loaded.sources),
    }
    rows = show_rows(loaded)
    width = max(len(k) for k, _, _ in rows)
    emit(as_json, payload, lambda _: "\n".join(f"{k:<{width}}  {v}  ({s})" for k, v, s in rows))


@cli.group()
def wallet() -> None:
    """The node's chain account."""


@wallet.command("address")
@home_option
@json_option
def wallet_address(home_dir: str | None, as_json: bool) -> None:
    """Print the chain address and check its binding to the peer id."""
    home = Home(resolve_home(home_dir))
    doc = identity.read_identity(home)
    try:
        identity.verify_binding(doc)
    except (ValueError, KeyError) as exc:
        raise Failure(f"{home.identity}: binding does not verify: {exc}") from None
    payload = {"address": doc["address"], "peer_id": doc["peer_id"], "binding_valid": True}
    emit(as_json, payload, lambda p: f"{p['address']}  (bound to peer {p['peer_id']})")


cli.add_command(job)
cli.add_command(bids)
cli.add_command(worker)
cli.add_command(gpu)
for command in (*WALLET_COMMANDS, dispute):
    wallet.add_command(command)
cli.add_command(settlement)
cli.add_command(dht)
cli.add_command(data)
cli.add_command(localnet)
cli.add_command(peers)


def main() -> None:
    cli(prog_name="idlegrid")
