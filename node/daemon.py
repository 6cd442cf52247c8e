"""The daemon: one trio main that owns the database, the local API and a nursery per role.

Start-up order matters for what a crash can leave behind: the data dir lock is taken before
anything is written (a second daemon on the same home fails without touching it), the database
opens before any service that could record state, and ``api.json`` is written last, so a CLI
that finds it can talk to a node that is fully up. Shutdown runs the same steps backwards, from
``finally`` blocks, so SIGINT, SIGTERM and errors all leave the home clean.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose stubs shadow trio's own annotations for mypy;
    # they export TaskStatus from trio_typing only.
    from trio_typing import TaskStatus

    from node.chain.node import ChainNode
    from node.market.service import Market
    from node.transfer.service import DataService
    from node.verify.qos_view import QosView

from config import Settings
from node import __version__
from node.api import ApiListenError, Handler, Request, Routes, serve
from node.blocks import block_routes, block_view
from node.chain.api import chain_routes
from node.chain.errors import ChainMisconfigured, ChainUnavailable
from node.debug_memory import memory_routes
from node.discovery import discovery_routes
from node.home import Home, NodeLock, write_private
from node.identity import NodeKeys
from node.market.api import market_routes
from node.market.file_expiry import run_file_expiry
from node.network import Network, run_network
from node.roles import run_role, services_of
from node.transfer.api import data_routes
from node.transfer.service import run_data
from p2p.host import ListenError
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class NodeContext:
    """What every service of a running node shares. Created once per daemon."""

    home: Home
    settings: Settings
    keys: NodeKeys
    db: Database
    blobs: BlobStore
    started_monotonic: float = field(default_factory=time.monotonic)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    api_port: int = 0
    network: Network | None = None
    market: Market | None = None  # made when a role first needs it
    chain: ChainNode | None = None  # with chain.settle: started before the roles
    data: DataService | None = None  # datasets served and fetched (node.transfer.service)
    qos: QosView | None = None  # sentries' QoS reports on workers (node.verify.qos_view)

    def status(self) -> dict[str, Any]:
        return {
            "running": True,
            "peer_id": self.keys.peer_id,
            "address": self.keys.address,
            "roles": list(self.settings.node.roles),
            "services": {role: services_of(role) for role in self.settings.node.roles},
            "name": self.settings.node.name,
            "home": str(self.home.root),
            "pid": os.getpid(),
            "version": __version__,
            "started_ms": self.started_ms,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "api": f"http://{self.settings.api.host}:{self.api_port}",
            "p2p": None
            if self.network is None
            else {
                "network": self.settings.p2p.network,
                "addrs": self.network.host.addrs,
                "connected_peers": len(self.network.host.connected_peers()),
                "known_peers": len(self.network.book.peers),
                "gossip": self.network.gossip.stats.as_dict(),
            },
        }


def routes(ctx: NodeContext) -> Routes:
    async def status(_: Request) -> Any:
        return ctx.status()

    async def peers(_: Request) -> Any:
        if ctx.network is None:
            return {"peers": [], "blocked": []}
        blocks = ctx.network.host.gate.blocks()
        return {"peers": ctx.network.peers_view(), "blocked": [block_view(b) for b in blocks]}

    async def market(_: Request) -> Any:
        workers = ctx.network.market_view() if ctx.network else []
        for worker in workers:  # the sentries' word on each, where this node heard it
            worker["qos"] = None if ctx.qos is None else ctx.qos.view(worker["peer_id"])
        # prices are in wei of the coin, or base units of the deployment's token
        return {"workers": workers, "token": ctx.settings.chain.token or None}

    table: dict[tuple[str, str], Handler] = {
        ("GET", "/v1/status"): status,
        ("GET", "/v1/peers"): peers,
        ("GET", "/v1/market"): market,
    }
    table.update(market_routes(ctx))
    table.update(chain_routes(ctx))
    table.update(discovery_routes(ctx))
    table.update(data_routes(ctx))
    table.update(block_routes(ctx))
    table.update(memory_routes())
    return table


async def run_node(
    home: Home,
    settings: Settings,
    keys: NodeKeys,
    *,
    handle_signals: bool = True,
    freeze_gc: bool = False,
    task_status: TaskStatus[NodeContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a node until cancelled or signalled; the caller holds the data dir lock.

    ``freeze_gc`` (for a node alone in its process) moves everything alive once the node has
    started out of the garbage collector's sight (``gc.freeze``): the libraries and services
    are about 150,000 objects that live as long as the process, and every full collection
    walked them all, 90-360 ms measured with 21 daemons on 2 cores, stalling auctions that
    happened to be under way. Objects made later are collected as before.
    """
    db = await Database.open(home.db)
    started = False
    try:
        ctx = NodeContext(home, settings, keys, db, BlobStore(home.blobs))
        await _record_start(ctx)
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_cancel_on_signal, nursery.cancel_scope)
            ctx.network = await nursery.start(run_network, ctx)
            if settings.chain.settle:
                from node.chain.node import run_chain  # noqa: PLC0415 - web3 only when settling

                await nursery.start(run_chain, ctx)
            ctx.data = await nursery.start(run_data, ctx)
            if settings.node.task_data_expire_s:
                await nursery.start(run_file_expiry, ctx)
            api = settings.api
            ctx.api_port = await nursery.start(
                serve, api.host, api.port, home.read_token(), routes(ctx)
            )
            for role in settings.node.roles:
                await nursery.start(run_role, role, ctx)
            _write_api_info(ctx)
            log.info("node started", extra={"peer_id": keys.peer_id, "port": ctx.api_port})
            if freeze_gc:
                gc.collect()  # what is garbage now is not frozen with the rest
                gc.freeze()
            task_status.started(ctx)
            started = True
    finally:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(FileNotFoundError):
                home.api.unlink()
            await db.close()
            if started:  # a refused start says why in one line; "stopped" would be noise
                log.info("node stopped")


async def _cancel_on_signal(
    scope: trio.CancelScope, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("stopping on signal", extra={"signal": signal.Signals(signum).name})
            scope.cancel()
            return


async def _record_start(ctx: NodeContext) -> None:
    await ctx.db.execute(
        "INSERT INTO node_meta(key, value) VALUES ('peer_id', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (ctx.keys.peer_id,),
    )
    body = json.dumps({"pid": os.getpid(), "roles": list(ctx.settings.node.roles)}).encode()
    await ctx.db.execute(
        "INSERT INTO events(at_ms, kind, body) VALUES (?, 'node.started', ?)",
        (ctx.started_ms, body),
    )


def _write_api_info(ctx: NodeContext) -> None:
    info = {"host": ctx.settings.api.host, "port": ctx.api_port, "pid": os.getpid()}
    write_private(ctx.home.api, json.dumps(info).encode())


def start(home: Home, settings: Settings, keys: NodeKeys) -> None:
    """Blocks running the daemon in this process (``idlegrid node start``).

    Raises:
        ListenError: a ``p2p.listen`` address could not be bound.
        ApiListenError: the API's port could not be bound.
        ChainMisconfigured, ChainUnavailable: with ``chain.settle``, the chain named by
            ``chain.*`` is not there, or not what the settings say.

        Each is raised bare, not inside the ExceptionGroup the node's nursery wraps it in, so
        that the command can name the setting to change instead of printing a traceback: it
        is the operator's to fix (another node on the port, a wrong chain id), not a crash.
    """
    lock = NodeLock(home)
    lock.acquire()
    try:
        trio.run(functools.partial(run_node, home, settings, keys, freeze_gc=True))
    except ExceptionGroup as group:
        refused = _sole_operator_error(group)
        if refused is None:
            log.exception("daemon crashed")  # into node.log too, not only the terminal
            raise
        raise refused from None
    except Exception:
        log.exception("daemon crashed")
        raise
    finally:
        lock.release()


# What can end a node at start that its operator fixes in the settings.
OPERATOR_ERRORS = (ListenError, ApiListenError, ChainMisconfigured, ChainUnavailable)


def _sole_operator_error(group: ExceptionGroup[Exception]) -> Exception | None:
    """The operator's error (:data:`OPERATOR_ERRORS`) that ended the node, if that and nothing
    else did."""
    refused, rest = group.split(OPERATOR_ERRORS)
    if refused is None or rest is not None:
        return None
    leaf: BaseException = refused
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]  # nurseries inside nurseries
    return leaf if isinstance(leaf, OPERATOR_ERRORS) else None
