"""No-bid explanations name the requirement that excluded the workers."""

from __future__ import annotations

from consensus.kinds import Wei
from consensus.market.matching import candidates, explain
from consensus.market.spec import Requirements
from consensus.pool import GpuOffer, Presence, Worker


def worker(name: str, vram: int, *, price: int = 10, status: str = "available",
           gpu_class: str = "rtx4090-24g", region: str = "eu") -> Worker:  # fmt: skip
    offer = GpuOffer(gpu_class=gpu_class, count=1, vram_mb=vram, price_wei_per_s=Wei(price))
    presence = Presence(expires_ms=1, nonce=bytes(16), run_id=b"r", seq=1, status="available",
                        offers=[offer], capacity=1, region=region)  # fmt: skip
    return Worker(name, presence, status, 0, 0)  # type: ignore[arg-type]


POOL = [worker(f"w{i}", 24000) for i in range(3)] + [worker(f"v{i}", 16000) for i in range(4)]


def test_vram_that_nobody_has_is_named_with_what_they_do_have() -> None:
    why = explain(POOL, Requirements(vram_mb=48000), 100)
    assert why == "0 of 7 workers have vram_mb >= 48000 (4 have 16000; 3 have 24000)"


def test_offline_workers_and_prices() -> None:
    offline = [worker("x", 24000, status="offline")]
    assert explain(offline, Requirements(), 100) == "0 of 1 workers are online (1 have offline)"
    assert "ask at most 5 wei/s (7 have 10 wei/s)" in explain(POOL, Requirements(), 5)


def test_class_and_region() -> None:
    assert "offer class a100-80g (7 have rtx4090-24g)" in explain(
        POOL, Requirements(gpu_class="a100-80g"), 100
    )
    assert "are in region us" in explain(POOL, Requirements(region="us"), 100)


def test_when_all_match_it_says_so_and_candidates_counts_them() -> None:
    assert explain(POOL, Requirements(vram_mb=20000), 100).startswith("3 of 7 workers match")
    assert len(candidates(POOL, Requirements(vram_mb=20000), 100)) == 3
    assert "no workers known" in explain([], Requirements(), 1)
