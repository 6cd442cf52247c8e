"""The payment asset of a deployment: native coin, or the ERC-20 its constructor named.

The client reads ``token()`` from the settlement contract once; with a token set, money comes in
by ``approve`` (journaled like every other write) and the contract's ``transferFrom``, and
balances are the token's ``balanceOf``. ``IdlegridTestToken`` is a plain OpenZeppelin ERC-20
with an open ``mint``: its ABI serves for any standard token (``mint`` is only ever called on
development chains), and its errors decode a refused ``transferFrom``.
"""

from __future__ import annotations

from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3

from node.chain import artifacts
from node.chain.backend import NATIVE, Chain

TEST_CONTRACT = "IdlegridTestToken"


def erc20_abi() -> list[dict[str, Any]]:
    return artifacts.load(TEST_CONTRACT).abi


def token_of(settlement: Any) -> ChecksumAddress | None:
    """The settlement contract's payment token (checksummed), or None for native coin."""
    address = str(settlement.functions.token().call())
    return None if int(address, 16) == 0 else Web3.to_checksum_address(address)


def deploy_test_token(chain: Chain, key: bytes | None = None) -> str:
    """Deploy a fresh test token (development chains only); return its address."""
    return chain.deploy_contract(artifacts.load(TEST_CONTRACT), [], key)


def mint(chain: Chain, token: str, to: str, amount: int, key: bytes | None = None) -> None:
    """Mint test tokens to ``to`` (anyone may: it is the test token's open faucet)."""
    contract = chain.w3.eth.contract(address=Web3.to_checksum_address(token), abi=erc20_abi())
    receipt = chain.transact(contract.functions.mint(Web3.to_checksum_address(to), amount), key)
    if receipt["status"] != 1:
        raise RuntimeError(f"mint on {token} reverted: is it the idlegrid test token?")


__all__ = ["NATIVE", "deploy_test_token", "erc20_abi", "mint", "token_of"]
