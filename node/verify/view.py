"""What ``job status`` shows of proof-of-compute: the guarantee, verdicts, reputation."""

from __future__ import annotations

from typing import Any

from consensus.market.messages import TaskRef
from consensus.verify.sampling import guarantee
from node.verify.store import VerifyStore
from storage.db import Database


async def verification_view(db: Database, job_id: bytes, spec: dict[str, Any],
                            tasks: list[dict[str, Any]], attempts: list[Any],
                            *, sample_size: int) -> dict[str, Any]:  # fmt: skip
    """The job's stated guarantee (per its largest task), each attempt's verdicts and
    escalations (cross-class misses), what a resumed attempt's guarantee covers, the
    attempts accepted with no sentry's verdict (the guarantee did not hold for those), and the
    reputation of the workers involved."""
    store = VerifyStore(db)
    level = spec.get("verification", "standard")
    segments = segments_per_task(spec, tasks)
    verdicts, workers, resumed, escalated, unchecked = [], set(), [], [], []
    for a in attempts:
        ref = TaskRef(job_id=job_id, task=a["idx"], attempt=a["attempt"])
        workers.add(a["worker"])
        if (a["outcome"] or "").startswith("unverified: "):  # paid, but no sentry judged it
            unchecked.append({"task": a["idx"], "attempt": a["attempt"],
                              "reason": a["outcome"].removeprefix("unverified: ")})  # fmt: skip
        first = await store.first_segment(ref)
        if level != "none" and first is not None and 0 < first < segments:
            text = guarantee(spec.get("kind", "?"), segments, sample_size, first=first)
            resumed.append({"task": a["idx"], "attempt": a["attempt"], "first": first,
                            "guarantee": text})  # fmt: skip
        for v in await store.verdicts(ref):
            verdicts.append({"task": a["idx"], "attempt": a["attempt"], "sentry": v["sentry"],
                             "worker": v["worker"], "passed": bool(v["passed"]),
                             "reason": v["reason"]})  # fmt: skip
        for e in await store.escalations(ref):
            escalated.append({"task": a["idx"], "attempt": a["attempt"], "sentry": e["sentry"],
                              "worker": e["worker"], "segments": e["segments"],
                              "reason": e["reason"], "outcome": a["outcome"] or ""})  # fmt: skip
    return {
        "level": level,
        "guarantee": "none requested"
        if level == "none"
        else guarantee(spec.get("kind", "?"), segments, sample_size),
        "verdicts": verdicts,
        "escalations": escalated,
        "resumed": resumed,
        "unchecked": unchecked,
        "reputation": {w: await store.reputation(w) for w in sorted(workers) if w},
    }


def segments_per_task(spec: dict[str, Any], tasks: list[dict[str, Any]]) -> int:
    """How many segments one task has: the spec's for train, one for exec, else the most
    checkpoints any task reported (render: its tiles)."""
    kind, runtime = spec.get("kind"), spec.get("runtime", {})
    if kind == "exec":
        return 1
    if kind == "train":
        return max(1, int(runtime.get("segments", 1)))
    return max([int(t["checkpoints"]) for t in tasks] + [1])
