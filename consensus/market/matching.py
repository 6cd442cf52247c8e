"""Which workers in the pool could take a demand, and, when none bid, why not.

A requester that gets no bids tells its user which requirement excluded the workers it knows,
e.g. ``0 of 7 workers have vram_mb >= 48000 (3 have 24000)``, instead of a bare timeout.
Requirements are applied in order (online, GPU class, count, VRAM, region, price), each to the
workers that passed the ones before, so the first step that empties the list is the culprit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from consensus.market.spec import Requirements
from consensus.pool import GpuOffer, Worker


@dataclass(frozen=True)
class Step:
    """How many workers were left after one requirement, and what the excluded ones had."""

    requirement: str
    matched: int
    considered: int
    others_have: str = ""


def offers_for(worker: Worker, req: Requirements) -> list[GpuOffer]:
    return [o for o in worker.presence.offers if req.gpu_class in ("", o.gpu_class)]


def candidates(workers: list[Worker], req: Requirements, max_price_wei_per_s: int) -> list[Worker]:
    """Workers whose presence says they could bid (online, class, count, VRAM, region, price)."""
    return _filter(workers, req, max_price_wei_per_s)[0]


def explain(workers: list[Worker], req: Requirements, max_price_wei_per_s: int) -> str:
    """One line saying which requirement excluded the workers we know."""
    if not workers:
        return "no workers known yet: is this node connected to the network?"
    left, steps = _filter(workers, req, max_price_wei_per_s)
    for step in steps:
        if step.matched == 0:
            had = f" ({step.others_have})" if step.others_have else ""
            return f"0 of {step.considered} workers {step.requirement}{had}"
    return (
        f"{len(left)} of {len(workers)} workers match every requirement but none bid "
        "(busy, below their own price or policy, or the window was too short)"
    )


def _filter(
    workers: list[Worker], req: Requirements, max_price: int
) -> tuple[list[Worker], list[Step]]:
    def best(worker: Worker, attr: Callable[[GpuOffer], int]) -> int:
        return max((attr(o) for o in offers_for(worker, req)), default=0)

    rules: list[tuple[str, Callable[[Worker], bool], Callable[[Worker], str]]] = [
        ("are online", lambda w: w.online, lambda w: w.status),
        (f"offer class {req.gpu_class}" if req.gpu_class else "offer any GPU class",
         lambda w: bool(offers_for(w, req)),
         lambda w: ",".join(o.gpu_class for o in w.presence.offers) or "nothing"),
        (f"have {req.gpu_count} GPUs", lambda w: best(w, lambda o: o.count) >= req.gpu_count,
         lambda w: f"{best(w, lambda o: o.count)} GPUs"),
        (f"have vram_mb >= {req.vram_mb}", lambda w: best(w, lambda o: o.vram_mb) >= req.vram_mb,
         lambda w: str(best(w, lambda o: o.vram_mb))),
        (f"are in region {req.region}", lambda w: req.region in ("", w.presence.region),
         lambda w: w.presence.region or "no region"),
        (f"ask at most {max_price} wei/s",
         lambda w: any(o.price_wei_per_s <= max_price for o in offers_for(w, req)),
         lambda w: f"{min(o.price_wei_per_s for o in offers_for(w, req))} wei/s"),
    ]  # fmt: skip
    steps, left = [], workers
    for requirement, keep, describe in rules:
        passed = [w for w in left if keep(w)]
        excluded = Counter(describe(w) for w in left if not keep(w))
        summary = "; ".join(f"{n} have {what}" for what, n in excluded.most_common(3))
        steps.append(Step(requirement, len(passed), len(left), summary))
        left = passed
        if not left:
            break
    return left, steps
