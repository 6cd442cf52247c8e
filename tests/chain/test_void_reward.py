"""Whoever sends a void cannot starve the disputer's reward (on anvil).

The reward goes to the disputer with at most 30k gas (``_trySendCoin``), and is burned if that
transfer fails: a contract refusing coin forfeits it. The void's sender picks the gas limit, so
it could try to give the transfer too little for a contract disputer's ``receive``. EIP-150
forbids it: a call gets all but a 64th of the gas left, so a transfer short of gas leaves its
caller under 500 gas, and the void still has the burn's transfer and its event to pay for. Here
a contract disputer whose ``receive`` needs about 22k gas (a storage write) raises an earnings
dispute, nobody answers, and a stranger sends the void at every gas limit from the least that
passes up past the transfer's 30k: each void either fails whole or pays the reward.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from web3 import Web3

from consensus.settlement.audits import EARNINGS
from node.chain.backend import Chain
from tests.chain.conftest import ETH, Anvil, Net, make_net
from tests.chain.test_audits import dispute_of, final_first_epoch, post_misdirected
from tests.chain.test_epochs import WINDOW, b


def disputer_code(target: str) -> bytes:
    """Init code of a contract that forwards any call with data to ``target`` (value
    included, reverting if it does) and, paid with no data, writes the value to slot 0."""
    head = bytes.fromhex(
        "36600857"  # CALLDATASIZE PUSH1 8 JUMPI: data goes to the forwarder
        "345f5500"  # receive: SSTORE(0, CALLVALUE) STOP
        "5b365f5f37"  # JUMPDEST; CALLDATACOPY(0, 0, CALLDATASIZE)
        "5f5f365f3473"  # CALL(GAS, target, CALLVALUE, 0, CALLDATASIZE, 0, 0): PUSH20 target
    )
    tail = bytes.fromhex(
        "5af1"  # GAS CALL
        "15602e57"  # ISZERO PUSH1 0x2e JUMPI: a failed call reverts
        "00"  # STOP
        "5b5f5ffd"  # JUMPDEST; REVERT(0, 0)
    )
    runtime = head + bytes.fromhex(target[2:]) + tail
    assert runtime[0x2E] == 0x5B  # the revert's JUMPDEST
    # PUSH1 len PUSH1 12 PUSH0 CODECOPY PUSH1 len PUSH0 RETURN, then the runtime
    init = bytes([0x60, len(runtime), 0x60, 12, 0x5F, 0x39, 0x60, len(runtime), 0x5F, 0xF3])
    return init + b"\x00\x00" + runtime


def send(net: Net, who: str, to: str | None, data: bytes, value: int = 0,
         gas: int = 3_000_000) -> Any:  # fmt: skip
    """A raw transaction from ``who``'s key; its receipt."""
    w3 = net.chain.w3
    key = net.keys[who]
    sender = Account.from_key(key).address
    tx = {"to": Web3.to_checksum_address(to) if to else None, "data": data, "value": value,
          "gas": gas, "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id,
          "nonce": w3.eth.get_transaction_count(sender)}  # fmt: skip
    if tx["to"] is None:
        del tx["to"]
    signed = Account.sign_transaction(tx, key)
    return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))


def rpc(net: Net, method: str, *params: Any) -> Any:
    return net.chain.w3.provider.make_request(method, list(params))["result"]  # type: ignore[attr-defined]


def test_a_void_at_any_gas_limit_pays_a_contract_disputer_or_fails_whole(anvil: Anvil) -> None:
    net = make_net(Chain.rpc(anvil.url, 31337))
    contract = net.client("other").contract
    disputer = send(net, "sentry2", None, disputer_code(net.address))["contractAddress"]
    assert send(net, "sentry2", disputer, b"", value=1, gas=23_300)["status"] == 0, \
        "its receive must need more than a bare transfer's stipend"  # fmt: skip
    assert send(net, "sentry2", disputer, contract.encode_abi("stake", args=[ETH]),
                value=ETH)["status"] == 1  # fmt: skip

    anchorer, first = final_first_epoch(net)
    _, bad = post_misdirected(net, anchorer, first)  # credits worker2 with worker's earnings
    w2, moved = b(net, "worker2"), bad.earnings
    args = [1, Web3.to_checksum_address(w2), moved[w2], bad.earnings_proof(w2)]
    assert send(net, "sentry2", disputer, contract.encode_abi("disputeEarnings", args=args))[
        "status"] == 1  # fmt: skip
    d = dispute_of(net, EARNINGS, "worker2", moved[w2])
    net.chain.advance(WINDOW)  # nobody answered
    debits = net.client("other").anchor_debits(1)
    void = contract.encode_abi("voidSum", args=[d.index, d.kind, Web3.to_checksum_address(
        d.party), d.amount, [r for r, _ in debits], [a for _, a in debits]])  # fmt: skip

    def try_void(gas: int) -> tuple[bool, int]:
        """(the void passed, what the disputer was paid), then the chain as it was."""
        snapshot = rpc(net, "evm_snapshot")
        try:
            passed = send(net, "other", net.address, void, gas=gas)["status"] == 1
            paid = int.from_bytes(net.chain.w3.eth.get_storage_at(disputer, 0))
        finally:
            assert rpc(net, "evm_revert", snapshot)
        return passed, paid

    low, high = 30_000, 1_000_000  # the least gas limit that passes, by bisection
    assert try_void(high) == (True, ETH // 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if try_void(mid)[0] else (mid, high)
    outcomes = {try_void(gas) for gas in range(high - 500, high + 36_000, 500)}
    assert outcomes == {(False, 0), (True, ETH // 2)}, outcomes
