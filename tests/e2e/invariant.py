"""What must hold on a localnet's chain after any fault: read from the chain, not the nodes.

- The contract holds exactly what came in (deposits, pool funding, stakes) less what went out
  (withdrawals, claims, fees paid out, slashes, voided anchors' bonds), by its event log and its
  own coin balance.
- No worker was paid more than the vouchers its requesters signed (the worker's node reports
  the sum of the largest voucher it holds per task attempt).
- Every job the requester escrowed is settled and its remainder returned.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from web3 import Web3

from node.chain import artifacts
from node.localnet.state import State
from tests.e2e.helpers import api

IN = {"Deposited": "amount", "PoolFunded": "amount", "Staked": "amount"}
OUT = {
    "Withdrawn": "amount",
    "PoolWithdrawn": "amount",
    "StakeWithdrawn": "amount",
    "Claimed": "paid",
    "EarningsClaimed": "paid",
    "FeesWithdrawn": "amount",
    "Slashed": "amount",
    "Voided": "slashed",
}


def chain_contract(state: State) -> tuple[Web3, Any]:
    w3 = Web3(Web3.HTTPProvider(state.chain.url, request_kwargs={"timeout": 10}))
    abi = artifacts.load().abi
    return w3, w3.eth.contract(address=Web3.to_checksum_address(state.chain.contract), abi=abi)


def _events(contract: Any, names: list[str]) -> dict[str, list[Any]]:
    return {name: getattr(contract.events, name)().get_logs(from_block=0) for name in names}


def _field(event: Any, name: str) -> int:
    return int(event["args"][name])


def paid_to_workers(state: State) -> dict[str, int]:
    """Coin each address received as a worker's earnings (per-task claims and epoch claims)."""
    _, contract = chain_contract(state)
    paid: dict[str, int] = defaultdict(int)
    for events in _events(contract, ["EarningsClaimed", "Claimed"]).values():
        for event in events:
            paid[event["args"]["worker"].lower()] += _field(event, "paid")
    return dict(paid)


def assert_escrow_invariant(state: State) -> None:
    """Raises AssertionError naming the first broken invariant (see the module docstring)."""
    w3, contract = chain_contract(state)
    events = _events(contract, [*IN, *OUT])
    came_in = sum(_field(e, f) for name, f in IN.items() for e in events[name])
    went_out = sum(_field(e, f) for name, f in OUT.items() for e in events[name])
    held = w3.eth.get_balance(contract.address)
    assert held == came_in - went_out, (
        f"the contract holds {held} wei, but its events say {came_in} in - {went_out} out"
    )
    paid = paid_to_workers(state)
    for node in state.nodes:
        if node.role != "worker":
            continue
        view = api(node).get("/v1/chain")
        vouched = int(view["payee"]["vouched_wei"])
        got = paid.get(node.address.lower(), 0)
        assert got <= vouched, f"{node.name} was paid {got} wei, but vouchers signed {vouched}"
    for node in state.nodes:
        if node.role != "requester":
            continue
        jobs = api(node).get("/v1/chain")["escrow"]["jobs"]
        assert set(jobs) <= {"returned"}, f"{node.name}: jobs not settled or refunded: {jobs}"
