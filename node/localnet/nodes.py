"""The localnet's nodes: plan them, initialise their data dirs, start their daemons.

Each node is an ordinary data dir under ``DIR/nodes/<name>`` initialised as ``idlegrid init``
does (keys 0600, token, identity, a commented ``idlegrid.toml``) with the settings of a local
network written into its file: one role, loopback addresses on free ports, the first node as
bootstrap peer, mDNS off, quick announcements, and the shared chain over JSON-RPC. The daemon
is ``idlegrid node start --home <that dir>``, so a node can be inspected with every ordinary
command (``idlegrid status --home ...``, ``idlegrid job submit --home ...``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from config import load
from config.render import commented_toml
from node import identity
from node.client import ApiClient
from node.home import Home, HomeError
from node.localnet import chain as localchain
from node.localnet.procs import free_port, spawn, wait_until
from node.localnet.state import ChainInfo, NodeInfo

GWEI = 10**9
BASE_PRICE_WEI_PER_S = 100 * GWEI  # worker-1 asks 100 gwei/s, worker-2 200, ...: a choice to make
NODE_START_TIMEOUT_S = 60.0
MARKET_TIMEOUT_S = 30.0  # presence every 2 s; dials back off 1, 2, 4 s while peers start
SOURCE = "localnet"
# Quicker than a real network's defaults, so a newcomer sees the market move in seconds.
TUNING: dict[str, Any] = {
    "p2p.announce_interval_s": 2,
    "p2p.offline_after_s": 6,
    "p2p.mdns": False,
    "market.bid_window_ms": 1000,
    "market.voucher_interval_ms": 1000,
    "market.lost_after_ms": 4000,
    "market.voucher_hold_ms": 20_000,  # a requester restart takes seconds; a cut worker idles
    "worker.sandbox": "auto",  # bwrap where it works; the jobs are the operator's own
    # Settlement on: a short epoch and a payout (or claim) at the first wei, so a newcomer sees
    # a job anchored and paid within a minute (see deploy() in node/localnet/chain.py).
    "chain.settle": True,
    "chain.epoch_s": 10,
    "chain.poll_s": 1,
    "chain.claim_threshold_wei": 1,
    "chain.payout_min_wei": 1,
}


def plan(root: Path, requesters: int, workers: int, sentries: int) -> list[NodeInfo]:
    """Names, roles, data dirs and p2p ports; requesters first (the first node is bootstrap)."""
    nodes = []
    for role, count in (("requester", requesters), ("worker", workers), ("sentry", sentries)):
        for i in range(1, count + 1):
            name = f"{role}-{i}"
            price = BASE_PRICE_WEI_PER_S * i if role == "worker" else None
            home = root / "nodes" / name
            nodes.append(NodeInfo(name, role, str(home), 0, "", "", price))
    # Only the bootstrap peer's port must be known before it starts; the others take a free
    # one when they bind (no race with other programs for it) and report it in their status.
    nodes[0].p2p_port = free_port()
    return nodes


def init_home(
    node: NodeInfo, bootstrap: str | None, chain: ChainInfo, extra: dict[str, Any] | None = None
) -> None:
    """Creates the node's keys and writes its config; fills in its peer id and address."""
    home = Home(Path(node.home))
    keys = identity.NodeKeys.generate()
    identity.save(home, keys, None)
    home.ensure_token()
    node.peer_id, node.address = keys.peer_id, keys.address
    flags = {
        "node.roles": ((node.role,), SOURCE),
        "node.name": (node.name, SOURCE),
        "p2p.listen": ((f"/ip4/127.0.0.1/tcp/{node.p2p_port}",), SOURCE),
        "p2p.bootstrap": ((bootstrap,) if bootstrap else None, SOURCE),
        "worker.price_wei_per_s": (node.price_wei_per_s, SOURCE),
        "chain.backend": ("rpc", SOURCE),
        "chain.rpc_url": (chain.url, SOURCE),
        "chain.chain_id": (chain.chain_id, SOURCE),
        "chain.contract": (chain.contract, SOURCE),
    } | {key: (value, SOURCE) for key, value in (TUNING | (extra or {})).items()}
    settings = load(None, env={}, flags=flags).settings
    home.config.write_text(commented_toml(settings), encoding="utf-8")


def bootstrap_addr(node: NodeInfo) -> str:
    return f"/ip4/127.0.0.1/tcp/{node.p2p_port}/p2p/{node.peer_id}"


def daemon_env() -> dict[str, str]:
    """The caller's environment minus ``IDLEGRID_*``: each node's config file is the truth."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}


def start_daemon(node: NodeInfo) -> None:
    cmd = [sys.executable, "-m", "node", "node", "start", "--home", node.home]
    node.proc = spawn(cmd, node.log, daemon_env())


def wait_ready(node: NodeInfo, timeout_s: float = NODE_START_TIMEOUT_S) -> None:
    """Waits until the node's API answers; records its API port."""
    status = wait_until(
        lambda: api_status(node), node.proc, node.log, timeout_s, f"{node.name}'s daemon"
    )
    node.api_port = int(status["api"].rsplit(":", 1)[-1])
    node.p2p_port = int(status["p2p"]["addrs"][0].split("/tcp/")[1].split("/")[0])


def api_status(node: NodeInfo) -> dict[str, Any] | None:
    """The daemon's ``/v1/status``, or None while it does not answer."""
    try:
        return dict(ApiClient(Home(Path(node.home)), timeout_s=3.0).get("/v1/status"))
    except HomeError:
        return None


def wait_market(requester: NodeInfo, workers: list[NodeInfo], timeout_s: float) -> None:
    """Waits until ``requester`` sees every worker available in its order book, so that a job
    submitted the moment ``localnet start`` returns finds bidders."""
    wanted = {w.peer_id for w in workers}

    def ready() -> bool | None:
        try:
            book = ApiClient(Home(Path(requester.home)), timeout_s=3.0).get("/v1/market")
        except HomeError:
            return None
        seen = {w["peer_id"] for w in book["workers"] if w["status"] == "available"}
        return True if wanted <= seen else None

    what = f"{requester.name}'s order book with all {len(workers)} workers"
    wait_until(ready, requester.proc, requester.log, timeout_s, what)


def connected_names(node: NodeInfo, by_peer: dict[str, str]) -> list[str] | None:
    """Names of the localnet nodes this node is connected to (None: its API does not answer)."""
    try:
        peers = ApiClient(Home(Path(node.home)), timeout_s=3.0).get("/v1/peers")["peers"]
    except HomeError:
        return None
    return sorted(by_peer.get(p["peer_id"], p["peer_id"]) for p in peers if p["connected"])


def fund(chain: ChainInfo, node: NodeInfo) -> None:
    localchain.fund_and_stake(chain, Home(Path(node.home)), stake=node.role != "requester")
