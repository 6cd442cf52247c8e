"""``idlegrid market``'s table: the benchmark score and the sentries' QoS word per worker."""

from __future__ import annotations

from node.cli import _human_market


def worker(peer: str, qos: dict | None, score: int = 12) -> dict:
    offer = {"gpu_class": "cpu", "count": 1, "vram_mb": 0, "price_wei_per_s": "150000000000"}
    return {"peer_id": peer, "status": "available", "region": "", "offers": [offer],
            "score": score, "qos": qos}  # fmt: skip


def qos(**over: object) -> dict:
    return {"flagged": False, "reason": "", "claimed": 12, "measured": 11, "latency_ms": 4,
            "probes": 3, "answered": 3, "busy": 0, "sentries": 1} | over  # fmt: skip


def test_the_table_says_who_is_flagged_and_why() -> None:
    text = _human_market({"workers": [
        worker("honest", qos()),
        worker("cheat", qos(flagged=True, reason="claims score 36, measured 11", measured=11)),
        worker("gone", qos(answered=0, measured=0)),
        worker("busy", qos(answered=0, busy=3, measured=0)),
        worker("new", None, score=0),
    ]})  # fmt: skip
    lines = text.splitlines()
    assert "SCORE" in lines[0] and "QOS" in lines[0]
    row = {line.split()[0]: line for line in lines[1:6]}
    assert row["honest"].endswith("ok (measured 11, 4 ms)")
    assert "150 gwei/s" in row["honest"]  # not 150000000000 wei
    assert row["cheat"].endswith("FLAGGED (measured 11)")
    assert row["gone"].endswith("no answer (3 probes)")
    assert row["busy"].endswith("busy")
    assert row["new"].split()[-2:] == ["-", "-"]
    assert "  cheat: flagged: claims score 36, measured 11" in lines
    assert lines[-1] == "5 workers"


def test_a_token_deployment_shows_base_units_unscaled() -> None:
    text = _human_market({"workers": [worker("w", qos())], "token": "0x" + "ab" * 20})
    assert "150000000000 units/s" in text.splitlines()[1]


def test_a_blocked_worker_is_shown_as_such_and_not_counted() -> None:
    text = _human_market({"workers": [worker("open", qos()), worker("shut", qos()) | {
        "blocked": True}]})  # fmt: skip
    row = {line.split()[0]: line for line in text.splitlines()[1:3]}
    assert " blocked " in row["shut"] and " available " in row["open"]
    assert text.splitlines()[-1] == "1 worker (1 blocked)"
