"""``job status``'s cost in the CLI's units, and ``market``'s name and RTT columns."""

from __future__ import annotations

from typing import Any

from node.cli_discovery import human_market
from node.cli_job import _human_job


def job_view(cost_wei: str, **over: Any) -> dict[str, Any]:
    return {"job_id": "ab" * 16, "kind": "exec", "state": "running", "reason": "",
            "task_states": [], "verification": {}, "cost_wei": cost_wei} | over  # fmt: skip


def test_job_cost_in_eth_and_gwei_not_raw_wei() -> None:
    assert "\ncost so far: 0.0000006 ETH (600 gwei)\n" in _human_job(job_view("600000000000"))
    assert "\ncost so far: 0 ETH\n" in _human_job(job_view("0"))
    token = _human_job(job_view("600000000000", token="0x" + "ab" * 20))
    assert "\ncost so far: 600000000000 base units\n" in token, "a token's decimals vary"


def worker(peer: str, **over: Any) -> dict[str, Any]:
    offer = {"gpu_class": "cpu", "count": 1, "vram_mb": 0, "price_wei_per_s": "150000000000"}
    return {"peer_id": peer, "name": "", "status": "available", "region": "", "offers": [offer],
            "score": 12, "qos": None, "rtt_ms": None} | over  # fmt: skip


def test_market_shows_each_workers_name_and_round_trip() -> None:
    text = human_market({"workers": [
        worker("near", name="worker-1", rtt_ms=3),
        worker("far", region="eu"),
        worker("rude", name="\x1b[2Jbox\nwith  spaces" + "x" * 40),
    ]})  # fmt: skip
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["WORKER", "NAME"] and "RTT" in lines[0].split()
    rtt_at = lines[0].index("RTT")
    row = {line.split()[0]: line for line in lines[1:4]}
    assert row["near"].split()[1] == "worker-1" and row["near"][rtt_at:].startswith("3 ms")
    assert row["far"].split()[1] == "-" and row["far"][rtt_at:].startswith("- ")
    assert "eu" in row["far"].split()
    assert "\x1b" not in text and "[2Jbox with spaces" in row["rude"], "a peer's text, tamed"
    assert "x" * 30 not in row["rude"], "and cut short"
    assert "150 gwei/s" in row["near"] and lines[-1] == "3 workers"
