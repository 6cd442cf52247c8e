"""The localnet's one chain: anvil when installed, else the embedded EVM behind JSON-RPC.

Both run as their own process on 127.0.0.1; every node reaches the chain with
``backend = "rpc"``, so the nodes of a localnet run the same chain code as on a real network.
Here the settlement contract is deployed, each node's wallet funded from the development
faucet, and workers and sentries staked through the same client ``idlegrid wallet stake`` uses.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from config.schema import ChainSettings
from node import identity
from node.home import Home
from node.localnet.procs import free_port, spawn, stop_all, wait_until
from node.localnet.state import ChainInfo

REPO = Path(__file__).resolve().parents[2]
ANVIL_NPM = REPO / "contracts" / "node_modules" / "@foundry-rs"
ANVIL_CHAIN_ID = 31337
FUND_WEI = 1000 * 10**18  # each node's wallet
STAKE_WEI = 10 * 10**18  # each worker and sentry: above the contract's sentry minimum and bond
CHAIN_START_TIMEOUT_S = 30.0


def anvil_binary() -> str | None:
    """anvil from ``$IDLEGRID_ANVIL``, the npm package in contracts/, or the PATH; else None."""
    if os.environ.get("IDLEGRID_ANVIL"):
        return os.environ["IDLEGRID_ANVIL"]
    found = sorted(ANVIL_NPM.glob("anvil-*/bin/anvil"))
    return str(found[0]) if found else shutil.which("anvil")


def start_chain(root: Path, mode: str) -> ChainInfo:
    """Starts the chain process (``mode``: auto, anvil or embedded) and waits until it answers.

    Raises:
        RuntimeError: anvil was asked for but is not installed, or the chain did not come up.
    """
    binary = anvil_binary() if mode in ("auto", "anvil") else None
    if mode == "anvil" and binary is None:
        raise RuntimeError(
            "--chain anvil: anvil is not installed (run `npm install` in contracts/, or set "
            "IDLEGRID_ANVIL to its path)"
        )
    port = free_port()
    log = root / "chain.log"
    if binary is not None:
        kind = "anvil"
        # A block every second, so contract windows (disputes, unbonding) pass on their own.
        cmd = [binary, "--host", "127.0.0.1", "--port", str(port),
               "--chain-id", str(ANVIL_CHAIN_ID), "--block-time", "1"]  # fmt: skip
    else:
        kind = "embedded"
        cmd = [sys.executable, "-m", "node.localnet.chain_server", "--port", str(port)]
    info = ChainInfo(kind, f"http://127.0.0.1:{port}", log=str(log))
    info.proc = spawn(cmd, log, dict(os.environ))
    try:
        info.chain_id = wait_until(
            lambda: _chain_id(info.url), info.proc, log, CHAIN_START_TIMEOUT_S, f"{kind} chain"
        )
    except BaseException:
        stop_all([("chain", info.proc)])
        raise
    return info


def _chain_id(url: str) -> int | None:
    """The endpoint's chain id, or None while it does not answer yet."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    # The URL is our own http://127.0.0.1:<port>, never a user's: no scheme to audit.
    req = urllib.request.Request(  # noqa: S310
        url, body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=2) as response:  # noqa: S310
            return int(json.loads(response.read())["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def deploy(info: ChainInfo) -> str:
    """Deploys the settlement contract from the dev chain's first (unlocked) account."""
    # web3 takes about a second to import: only commands that touch the chain pay for it.
    from node.chain import artifacts  # noqa: PLC0415
    from node.chain.backend import Chain, DeployParams  # noqa: PLC0415

    chain = Chain.rpc(info.url, info.chain_id)
    # Windows of seconds, not the hour a real network uses: an epoch anchored, disputable,
    # final and claimed while the newcomer watches.
    params = DeployParams(dispute_window_s=10, unbonding_delay_s=10)
    return chain.deploy(artifacts.load(), params)


def settings(info: ChainInfo) -> ChainSettings:
    return ChainSettings(
        backend="rpc", rpc_url=info.url, chain_id=info.chain_id, contract=info.contract
    )


def fund_and_stake(info: ChainInfo, home: Home, stake: bool) -> None:
    """Funds the node's wallet from the faucet; bonds stake for a worker or a sentry.

    The stake goes through :func:`node.chain.service.open_settlement` with the node's own key
    and journal, as ``idlegrid wallet stake`` does, so the node's journal records it.
    """
    from node.chain.backend import Chain  # noqa: PLC0415
    from node.chain.service import open_settlement  # noqa: PLC0415

    keys = identity.load(home, lambda: None)
    Chain.rpc(info.url, info.chain_id).fund(keys.address, FUND_WEI)
    if stake:
        client = open_settlement(settings(info), keys.wallet_key, home.db)
        client.stake(STAKE_WEI)
        if client.journal is not None:
            client.journal.close()


def balances(info: ChainInfo, addresses: list[str]) -> tuple[int, dict[str, int]]:
    """The chain's latest block and each address's balance in wei.

    Raises:
        node.chain.errors.ChainError: the chain does not answer.
    """
    from node.chain.backend import Chain  # noqa: PLC0415

    chain = Chain.rpc(info.url, info.chain_id, timeout_s=3.0)
    return int(chain.w3.eth.block_number), {a: chain.balance(a) for a in addresses}
