"""``localnet status``: a running worker's price is the one it announces now, not the one
localnet.json recorded when the net started."""

from __future__ import annotations

from typing import Any

from node.cli_localnet import _human_status, live_prices
from node.client import ApiRefused


def node(name: str, role: str, alive: bool = True, price: str | None = None) -> dict[str, Any]:
    return {"name": name, "role": role, "pid": 1, "alive": alive, "api_port": 1, "p2p_port": 2,
            "peer_id": f"12D3KooW{name}", "home": f"/h/{name}", "log": "", "address": "0x",
            "price_wei_per_s": price, "connected": [], "balance_wei": None}  # fmt: skip


def status(*nodes: dict[str, Any]) -> dict[str, Any]:
    chain = {"kind": "anvil", "url": "http://127.0.0.1:1", "chain_id": 31337, "contract": "0x",
             "pid": 1, "alive": False, "block": None}  # fmt: skip
    return {"dir": "/ln", "running": True, "stale": False, "chain": chain, "nodes": list(nodes)}


def market(*prices: tuple[str, str]) -> dict[str, Any]:
    return {"workers": [{"peer_id": f"12D3KooW{name}", "offers": [{"price_wei_per_s": wei}]}
                        for name, wei in prices]}  # fmt: skip


def test_running_workers_show_the_price_the_market_hears() -> None:
    asked: list[str] = []
    answers = {
        "/h/sentry-1": market(("worker-1", "999")),
        "/h/requester-1": market(("worker-1", "300000000000"), ("worker-2", "1")),
    }

    def market_of(home: str) -> Any:
        asked.append(home)
        return answers[home]

    payload = live_prices(status(
        node("sentry-1", "sentry"), node("requester-1", "requester"),
        node("worker-1", "worker", price="100000000000"),
        node("worker-2", "worker", alive=False, price="200000000000"),
    ), market_of)  # fmt: skip
    prices = {n["name"]: n["price_wei_per_s"] for n in payload["nodes"]}
    assert prices["worker-1"] == "300000000000", "edited and restarted: the live price"
    assert prices["worker-2"] == "200000000000", "not running: what it was started with"
    assert asked == ["/h/requester-1"], "the requester's market first, and enough"
    assert "300 gwei" in _human_status(payload).splitlines()[-2]


def test_a_node_that_does_not_answer_leaves_the_recorded_price() -> None:
    def market_of(home: str) -> Any:
        raise ApiRefused(409, "not running")

    worker_1 = node("worker-1", "worker", price="100000000000")
    payload = live_prices(status(node("requester-1", "requester"), worker_1), market_of)
    assert payload["nodes"][1]["price_wei_per_s"] == "100000000000"
