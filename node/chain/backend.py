"""One chain interface, two backends: the embedded in-process EVM, or any JSON-RPC endpoint.

The embedded chain (web3's ``EthereumTesterProvider``: eth-tester over py-evm) starts in about
0.2 s with no network and no binary, which makes it the default on a fresh machine. It lives in
memory; :mod:`node.chain.client` rebuilds its state at start-up from the journal. A JSON-RPC
endpoint (anvil, an Arbitrum node) is checked at start-up: it must answer with the configured
chain id. Everything here is synchronous; :mod:`node.chain.service` runs it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from eth_account import Account
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.providers.rpc.utils import REQUEST_RETRY_ALLOWLIST, ExceptionRetryConfiguration
from web3.types import Wei

from node.chain.artifacts import Artifact
from node.chain.errors import ChainMisconfigured, ChainUnavailable

NATIVE = "0x0000000000000000000000000000000000000000"  # the token address that means native coin


@dataclass(frozen=True)
class DeployParams:
    """Constructor arguments of the settlement contract (fixed for its lifetime)."""

    treasury: str | None = None  # None: the embedded chain's first account
    fee_bps: int = 100  # 1 % of every claim
    claim_grace_s: int = 3600  # workers claim until this long after a job ends
    unbonding_delay_s: int = 7 * 86400
    sentry_min_stake_wei: int = 10**18
    slash_quorum: int = 2
    slash_burn_bps: int = 5000
    anchor_bond_wei: int = 10**18  # stake an anchorer must have bonded (slashed on a void)
    dispute_window_s: int = 3600  # to dispute an anchored entry, and then to answer
    token: str | None = None  # the ERC-20 every amount is in; None: native coin


class Chain:
    """A connected web3 plus what only a development chain can do (time travel, faucet)."""

    def __init__(self, w3: Web3, kind: str) -> None:
        self.w3 = w3
        self.kind = kind  # "embedded" | "rpc"
        self.chain_id = int(w3.eth.chain_id)

    @classmethod
    def embedded(cls) -> Chain:
        return cls(Web3(EthereumTesterProvider()), "embedded")

    @classmethod
    def rpc(cls, url: str, chain_id: int, timeout_s: float = 10.0) -> Chain:
        """Connect to ``url`` and check that it is chain ``chain_id``.

        Raises:
            ChainUnavailable: no answer from ``url``.
            ChainMisconfigured: it answered with another chain id.
        """
        # Not eth_getLogs: an endpoint refusing a range answers HTTP 400 or 413, which web3
        # would retry five times with backoff before the scan could try a shorter one
        # (node/chain/logs.py); a transport failure there fails the look, retried later.
        retry = ExceptionRetryConfiguration(
            errors=(ConnectionError, requests.HTTPError, requests.Timeout),  # web3's own
            method_allowlist=[m for m in REQUEST_RETRY_ALLOWLIST if m != "eth_getLogs"],
        )
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s},
                               exception_retry_configuration=retry))  # fmt: skip
        try:
            actual = int(w3.eth.chain_id)
        except Exception as exc:
            raise ChainUnavailable(f"chain.rpc_url {url}: no answer ({exc})") from None
        if actual != chain_id:
            raise ChainMisconfigured(f"chain.chain_id is {chain_id} but {url} is chain {actual}")
        return cls(w3, "rpc")

    def now(self) -> int:
        """The latest block's timestamp: contract time, which is what deadlines compare to."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def advance(self, seconds: int) -> None:
        """Move chain time forward (development chains only: embedded or anvil)."""
        if self.kind == "embedded":
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            tester.time_travel(self.now() + seconds)
        else:
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def fund(self, address: str, wei: int) -> None:
        """Give ``address`` coin from the development chain's faucet."""
        to = Web3.to_checksum_address(address)
        if self.kind == "embedded":
            faucet = self.w3.eth.accounts[0]
            tx = self.w3.eth.send_transaction({"from": faucet, "to": to, "value": Wei(wei)})
            self.w3.eth.wait_for_transaction_receipt(tx)
        else:
            total = self.balance(to) + wei
            self.w3.provider.make_request("anvil_setBalance", [to, hex(total)])  # type: ignore[arg-type]

    def deploy(self, artifact: Artifact, params: DeployParams, key: bytes | None = None) -> str:
        """Deploy the contract; return its address.

        The embedded chain deploys from its first (unlocked) account as its very first
        transaction (its second, after the test token, when it pays in one), so the address,
        and with it every EIP-712 domain, is the same on every machine. Elsewhere the deployer
        signs with ``key``. ``params.token`` must already be deployed.
        """
        treasury = params.treasury or self.w3.eth.accounts[0]
        args = (
            Web3.to_checksum_address(treasury),
            params.fee_bps,
            params.claim_grace_s,
            params.unbonding_delay_s,
            params.sentry_min_stake_wei,
            params.slash_quorum,
            params.slash_burn_bps,
            params.anchor_bond_wei,
            params.dispute_window_s,
            Web3.to_checksum_address(params.token or NATIVE),
        )
        return self.deploy_contract(artifact, [args], key)

    def deploy_contract(self, artifact: Artifact, args: list[Any], key: bytes | None) -> str:
        """Deploy ``artifact`` with constructor ``args``; return its address (see deploy)."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.transact(factory.constructor(*args), key)
        if receipt["status"] != 1:
            raise ChainMisconfigured(f"deployment of {artifact.name} reverted")
        return str(receipt["contractAddress"])

    def transact(self, call: Any, key: bytes | None) -> Any:
        """Send a contract call (or constructor) from the embedded chain's unlocked first
        account (``key`` None), or signed with ``key``; return its receipt. For set-up only
        (deploying, minting test tokens): node transactions go through the journal."""
        if key is None:
            tx_hash = call.transact({"from": self.w3.eth.accounts[0]})
        else:
            sender = Account.from_key(key).address
            tx: dict[str, Any] = call.build_transaction(
                {"from": sender, "nonce": self.w3.eth.get_transaction_count(sender)}
            )
            signed = Account.sign_transaction(tx, key)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return self.w3.eth.wait_for_transaction_receipt(tx_hash)
