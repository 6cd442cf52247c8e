"""A real EVM for every chain test: the embedded one (eth-tester + py-evm), and anvil when the
npm package is installed in contracts/ (else those cases skip, saying why). A deployment pays in
native coin, or (``token``) in the test ERC-20, minted to every wallet."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from consensus.settlement.epoch import Spend
from node.chain import artifacts
from node.chain.backend import Chain, DeployParams
from node.chain.client import Settlement
from node.chain.signing import sign_spend
from node.chain.token import deploy_test_token, mint
from node.localnet.chain import anvil_binary

REPO = Path(__file__).resolve().parents[2]
ETH = 10**18
PARAMS = DeployParams(
    fee_bps=100,
    claim_grace_s=3600,
    unbonding_delay_s=7 * 86400,
    sentry_min_stake_wei=ETH,
    slash_quorum=2,
    slash_burn_bps=5000,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """anvil as a child process on a free port; ``state`` persists it across restarts."""

    def __init__(self, binary: str, state: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.state = state
        self.args = args  # e.g. ("--block-time", "1"): chain time moves without transactions
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--silent", "--chain-id", "31337"]
        if self.state is not None:
            cmd += ["--state", str(self.state)]
        cmd += list(self.args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # polling a child's port is not test synchronisation
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("anvil did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@dataclass
class Net:
    """A deployed settlement contract and a few funded wallets on one chain."""

    chain: Chain
    address: str
    keys: dict[str, bytes]
    token: str | None = None  # the payment token; None: native coin

    def client(self, who: str) -> Settlement:
        return Settlement(self.chain, artifacts.load(), self.address, self.keys[who])

    def addr(self, who: str) -> str:
        return str(Account.from_key(self.keys[who]).address)

    def spend(self, who: str, cumulative: int, signer: str | None = None) -> Spend:
        """``who``'s signed spend of ``cumulative`` (signed by ``signer``'s key to forge one)."""
        me = bytes.fromhex(self.addr(who)[2:])
        return sign_spend(self.keys[signer or who], self.client(who).domain, me, cumulative)

    def spends(self, cumulative: int, *who: str) -> dict[bytes, Spend]:
        """Spends of ``cumulative`` by each of ``who`` (default: the requester), for an anchor."""
        spends = [self.spend(w, cumulative) for w in who or ("requester",)]
        return {s.requester: s for s in spends}

    def balance(self, address: str) -> int:
        """What ``address`` holds of the payment asset (token or coin)."""
        return self.client("other").balance(address)

    def gas_cost(self, tx_hash: str | None) -> int:
        """What a transaction took off its sender's payment-asset balance for gas: nothing on a
        token deployment (gas is paid in coin)."""
        if self.token is not None:
            return 0
        receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


WALLETS = ("requester", "worker", "worker2", "sentry1", "sentry2", "sentry3", "other")


def make_net(chain: Chain, token: bool = False) -> Net:
    """Funded wallets and a deployment; ``token``: paying in a fresh test ERC-20, of which every
    wallet gets as much as it has coin."""
    keys = {name: Account.create().key for name in (*WALLETS, "treasury", "deployer")}
    keys = {k: bytes(v) for k, v in keys.items()}
    for key in keys.values():
        chain.fund(Account.from_key(key).address, 1000 * ETH)
    deployer = None if chain.kind == "embedded" else keys["deployer"]
    coin = deploy_test_token(chain, deployer) if token else None
    for key in keys.values() if coin else ():
        mint(chain, coin, Account.from_key(key).address, 1000 * ETH, deployer)
    params = DeployParams(
        **{**PARAMS.__dict__, "treasury": Account.from_key(keys["treasury"]).address, "token": coin}
    )
    address = chain.deploy(artifacts.load(), params, deployer)
    return Net(chain, Web3.to_checksum_address(address), keys, coin)


class ChainOfMachine:
    """A fresh chain per Hypothesis example of a state machine: the embedded EVM, or an anvil
    child process (stopped by ``stop``; the example skips when anvil is not installed)."""

    def __init__(self, kind: str) -> None:
        self.node: Anvil | None = None
        if kind == "embedded":
            self.chain = Chain.embedded()
            return
        binary = anvil_binary()
        if binary is None:
            pytest.skip("anvil not installed: run `npm install` in contracts/ (@foundry-rs/anvil)")
        self.node = Anvil(binary)
        self.node.start()
        self.chain = Chain.rpc(self.node.url, 31337)

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


@pytest.fixture(scope="session")
def anvil_bin() -> str:
    binary = anvil_binary()
    if binary is None:
        pytest.skip("anvil not installed: run `npm install` in contracts/ (@foundry-rs/anvil)")
    return binary


@pytest.fixture
def anvil(anvil_bin: str) -> Iterator[Anvil]:
    node = Anvil(anvil_bin)
    node.start()
    yield node
    node.stop()


@pytest.fixture(params=["embedded", "anvil"])
def net(request: pytest.FixtureRequest) -> Net:
    if request.param == "token":
        return make_net(Chain.embedded(), token=True)
    if request.param == "embedded":
        return make_net(Chain.embedded())
    node: Anvil = request.getfixturevalue("anvil")
    return make_net(Chain.rpc(node.url, 31337))


# ``net`` on a deployment that pays in a token (embedded chain) as well: for the tests that go
# through the ways money moves in and out.
ALSO_TOKEN = pytest.mark.parametrize("net", ["embedded", "anvil", "token"], indirect=True)
