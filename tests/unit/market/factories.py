"""Small builders for market messages in tests."""

from __future__ import annotations

from consensus.kinds import Wei
from consensus.market.messages import Bid, Demand, TaskOrder, TaskRef, Workload
from consensus.market.spec import Requirements

NOW = 1_000_000
REF = TaskRef(job_id=bytes(16), task=0, attempt=0)


def demand(
    ref: TaskRef = REF,
    *,
    requirements: Requirements | None = None,
    max_price: int = 100,
    budget: int = 10**9,
    estimate_s: int = 60,
    kind: str = "exec",
    window_ms: int = 2000,
    network: bool = False,
) -> Demand:
    return Demand(
        expires_ms=NOW + 60_000, nonce=bytes(16), ref=ref, kind=kind,
        requirements=requirements or Requirements(gpu_class="cpu"),
        max_price_wei_per_s=Wei(max_price), budget_wei=Wei(budget), estimate_s=estimate_s,
        deadline_ms=NOW + 3_600_000, bid_until_ms=NOW + window_ms, verification="none",
        network=network, reply_to=["/ip4/127.0.0.1/tcp/1/p2p/x"],
    )  # fmt: skip


def bid(ref: TaskRef = REF, *, price: int = 50, gpus: int = 1, est_s: int = 60,
        gpu_class: str = "cpu") -> Bid:  # fmt: skip
    return Bid(expires_ms=NOW + 60_000, nonce=bytes(16), ref=ref, price_wei_per_s=Wei(price),
               gpus=gpus, gpu_class=gpu_class, est_seconds=est_s)  # fmt: skip


def order(ref: TaskRef = REF, *, price: int = 50, gpus: int = 1, worker: str = "w") -> TaskOrder:
    return TaskOrder(
        expires_ms=NOW + 60_000, nonce=bytes(16), ref=ref, worker=worker,
        price_wei_per_s=Wei(price), gpus=gpus, budget_wei=Wei(10**9), deadline_ms=NOW + 10**6,
        workload=Workload(kind="exec", command=["true"]),
    )  # fmt: skip
