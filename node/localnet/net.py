"""Start, inspect and stop a whole localnet: the chain, then the nodes, recorded as they come.

Start order: the chain (and the contract on it), every node's data dir (funded and, for workers
and sentries, staked), then every daemon at once; ``start`` returns when each API answers and
each requester sees every worker in its order book, so a job submitted next finds bidders.
The state file is saved after every process started, so a start that fails half-way is undone
by stopping what the file lists.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from node.localnet import chain as localchain
from node.localnet import nodes
from node.localnet.procs import stop_all
from node.localnet.state import ChainInfo, NodeInfo, State, load_state


class LocalnetError(RuntimeError):
    """The localnet cannot do what was asked (already running, not started, failed to start)."""


def check_free(root: Path) -> str | None:
    """Refuses a DIR whose localnet still runs; clears a stale one. Returns what it cleared.

    Raises:
        LocalnetError: some of its processes are alive.
    """
    try:
        state = load_state(root)
    except ValueError as exc:
        raise LocalnetError(f"{exc}; remove it, or choose another --dir") from None
    if state is None:
        return None
    alive = state.alive()
    if alive:
        raise LocalnetError(
            f"a localnet is already running in {root} ({len(alive)} processes alive: "
            f"{', '.join(alive)}); see `idlegrid localnet status --dir {root}`, or stop it "
            f"with `idlegrid localnet stop --dir {root}`"
        )
    clear(root)
    return f"stale localnet state in {root} (every process gone): cleared, starting afresh"


def clear(root: Path) -> None:
    """Removes what a localnet wrote in ``root`` (node data dirs, chain log, state)."""
    shutil.rmtree(root / "nodes", ignore_errors=True)
    for name in ("chain.log", "localnet.json"):
        (root / name).unlink(missing_ok=True)


def start(
    root: Path,
    requesters: int,
    workers: int,
    sentries: int,
    chain_mode: str,
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> State:
    """Starts a localnet in ``root``; on any failure stops what it had started.

    ``overrides`` maps a node name (or ``"*"`` for every node) to config keys set on top of
    the localnet's own (``nodes.TUNING``): how tests make one worker a cheat, say.

    Raises:
        LocalnetError: already running, or something did not start (the message says what).
    """
    root.mkdir(parents=True, exist_ok=True)
    state = State(str(root), ChainInfo("", ""))
    try:
        state.chain = localchain.start_chain(root, chain_mode)
        state.save()
        state.chain.contract = localchain.deploy(state.chain)
        state.nodes = nodes.plan(root, requesters, workers, sentries)
        for node in state.nodes:
            boot = None if node is state.nodes[0] else nodes.bootstrap_addr(state.nodes[0])
            extra = dict((overrides or {}).get("*", {}))
            extra |= (overrides or {}).get(node.name, {})
            nodes.init_home(node, boot, state.chain, extra)
            nodes.fund(state.chain, node)
        _start_daemons(state)
    except BaseException as exc:
        stop_all(state.procs())
        state.save()
        if isinstance(exc, Exception):
            raise LocalnetError(f"localnet did not start: {exc}") from exc
        raise
    return state


def _start_daemons(state: State) -> None:
    # All at once: a node up before the bootstrap peer dials it again after a short backoff.
    for node in state.nodes:
        nodes.start_daemon(node)
        state.save()
    for node in state.nodes:
        nodes.wait_ready(node)
    state.save()
    workers = [n for n in state.nodes if n.role == "worker"]
    for requester in (n for n in state.nodes if n.role == "requester"):
        nodes.wait_market(requester, workers, nodes.MARKET_TIMEOUT_S)


def require(root: Path) -> State:
    """The localnet state in ``root``.

    Raises:
        LocalnetError: none was started there, or the file is unreadable.
    """
    try:
        state = load_state(root)
    except ValueError as exc:
        raise LocalnetError(str(exc)) from None
    if state is None:
        raise LocalnetError(
            f"no localnet in {root}: start one with `idlegrid localnet start --dir {root}`"
        )
    return state


def status(state: State) -> dict[str, Any]:
    """Every node (alive, API, peers, balance) and the chain (url, block), as one document."""
    by_peer = {n.peer_id: n.name for n in state.nodes}
    chain: dict[str, Any] = {
        "kind": state.chain.kind, "url": state.chain.url, "chain_id": state.chain.chain_id,
        "contract": state.chain.contract, "pid": state.chain.proc.pid,
        "alive": state.chain.proc.alive(), "block": None,
    }  # fmt: skip
    wallets: dict[str, int] = {}
    if chain["alive"]:
        try:
            chain["block"], wallets = localchain.balances(
                state.chain, [n.address for n in state.nodes]
            )
        except Exception as exc:  # a chain that is up but not answering is a status to show
            chain["error"] = str(exc)
    rows = [_node_row(n, by_peer, wallets) for n in state.nodes]
    alive = state.alive()
    return {
        "dir": state.dir,
        "running": len(alive) == len(state.procs()),
        "stale": not alive,
        "chain": chain,
        "nodes": rows,
    }


def _node_row(node: NodeInfo, by_peer: dict[str, str], wallets: dict[str, int]) -> Any:
    proc = node.live_proc()
    alive = proc.alive()
    peers = nodes.connected_names(node, by_peer) if alive else None
    balance = wallets.get(node.address)
    return {
        "name": node.name, "role": node.role, "pid": proc.pid, "alive": alive,
        "api_port": node.api_port, "p2p_port": node.p2p_port, "peer_id": node.peer_id,
        "home": node.home, "log": str(node.log), "address": node.address,
        "price_wei_per_s": None if node.price_wei_per_s is None else str(node.price_wei_per_s),
        "connected": peers, "balance_wei": None if balance is None else str(balance),
    }  # fmt: skip


def stop(state: State) -> dict[str, str]:
    """Stops every process of the localnet (daemons first, then the chain)."""
    return stop_all(state.procs())
