"""The market's part of the local API: submit and follow jobs, see a worker's decisions.

Routes (all JSON; ids are hex and may be shortened to any unique prefix; money is decimal
text in wei):

    POST /v1/jobs                 {"spec": "<TOML text>", "base_dir": "/abs/dir"} -> {"job_id"}
    GET  /v1/jobs                 the latest jobs, newest first
    GET  /v1/job?id=ID            one job: tasks, attempts, cost so far
    POST /v1/job/cancel?id=ID     cancel what is not finished
    GET  /v1/job/logs?id=ID&after=CURSOR   log lines after a cursor
    GET  /v1/job/bids?id=ID       every bid, with why it won or lost
    GET  /v1/job/results?id=ID    the result archive of each finished task
    GET  /v1/market/stats         market messages this requester sent and received, by kind
    GET  /v1/worker               a worker's status and its latest bid decisions
"""

from __future__ import annotations

import json
import tomllib
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from consensus.kinds import from_wire
from consensus.market.messages import BlobRef
from consensus.market.spec import SpecError, parse_spec
from node.api import ApiError, Request, Routes
from node.verify.view import verification_view

if TYPE_CHECKING:
    from config.schema import Settings
    from node.daemon import NodeContext
    from node.market.requester import JobManager


def market_routes(ctx: NodeContext) -> Routes:
    def jobs() -> JobManager:
        manager = ctx.market.jobs if ctx.market is not None else None
        if manager is None:
            raise ApiError(
                409,
                "this node does not have the requester role (add it to "
                "node.roles in idlegrid.toml, or IDLEGRID_NODE_ROLES, and restart)",
            )
        return manager

    async def job_id(request: Request) -> bytes:
        prefix = _query(request, "id")
        try:
            return await jobs().job_by_prefix(prefix)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0])) from None

    async def submit(request: Request) -> Any:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("spec"), str):
            raise ApiError(400, 'expected {"spec": "<TOML text>", "base_dir": "<dir>"}')
        try:
            spec = parse_spec(tomllib.loads(body["spec"]))
        except tomllib.TOMLDecodeError as exc:
            raise ApiError(400, f"job spec is not valid TOML: {exc}") from None
        except SpecError as exc:
            raise ApiError(400, f"job spec: {exc}") from None
        base = Path(str(body.get("base_dir") or "."))
        if not base.is_absolute() or not base.is_dir():
            raise ApiError(400, f"base_dir must be an existing absolute folder: {base}")
        try:
            new_id = await jobs().submit(spec, base)
        except ValueError as exc:  # PackError: a missing input; SpecError: a dataset not here
            what = "job spec" if isinstance(exc, SpecError) else "inputs"
            raise ApiError(400, f"{what}: {exc}") from None
        return {"job_id": new_id.hex()}

    async def job_list(_: Request) -> Any:
        return {"jobs": [_job_summary(row) for row in await jobs().store.jobs()]}

    async def job_view(request: Request) -> Any:
        return await _job_detail(jobs(), await job_id(request), ctx.settings)

    async def cancel(request: Request) -> Any:
        return {"cancelled": await jobs().cancel(await job_id(request))}

    async def logs(request: Request) -> Any:
        after = _int_query(request, "after", 0)
        rows = await jobs().store.logs(await job_id(request), after)
        lines = [{"cursor": r["cursor"], "task": r["idx"], "line": r["line"]} for r in rows]
        return {"lines": lines, "cursor": lines[-1]["cursor"] if lines else after}

    async def bids(request: Request) -> Any:
        rows = await jobs().store.bids(await job_id(request))
        # prices are in wei of the coin, or base units of the deployment's token
        return {"bids": [_bid_view(r) for r in rows], "token": ctx.settings.chain.token or None}

    async def results(request: Request) -> Any:
        manager, found = jobs(), await job_id(request)
        out = []
        for task in await manager.store.tasks(found):
            if task.result is None:
                continue
            ref = from_wire(BlobRef, msgpack.unpackb(task.result))
            path = manager.share.local_path(ref)  # the plaintext, once fetched and opened
            out.append({"task": task.idx, "path": str(path) if path else None,
                        "present": path is not None, "size": ref.size,
                        "state": task.state})  # fmt: skip
        return {"results": out}

    async def stats(_: Request) -> Any:
        return {"messages": dict(jobs().messages)}

    async def worker(_: Request) -> Any:
        service = ctx.market.worker if ctx.market is not None else None
        if service is None:
            raise ApiError(
                409,
                "this node does not have the worker role (add it to "
                "node.roles in idlegrid.toml, or IDLEGRID_NODE_ROLES, and restart)",
            )
        return await service.status()

    return {
        ("POST", "/v1/jobs"): submit,
        ("GET", "/v1/jobs"): job_list,
        ("GET", "/v1/job"): job_view,
        ("POST", "/v1/job/cancel"): cancel,
        ("GET", "/v1/job/logs"): logs,
        ("GET", "/v1/job/bids"): bids,
        ("GET", "/v1/job/results"): results,
        ("GET", "/v1/market/stats"): stats,
        ("GET", "/v1/worker"): worker,
    }


def _query(request: Request, name: str) -> str:
    values = urllib.parse.parse_qs(request.query).get(name)
    if not values or not values[0]:
        raise ApiError(400, f"missing ?{name}=")
    return values[0]


def _int_query(request: Request, name: str, default: int) -> int:
    values = urllib.parse.parse_qs(request.query).get(name)
    try:
        return int(values[0]) if values else default
    except ValueError:
        raise ApiError(400, f"?{name}= must be an integer") from None


def _job_summary(row: Any) -> dict[str, Any]:
    spec = json.loads(row["spec"])
    return {
        "job_id": bytes(row["job_id"]).hex(), "name": row["name"], "kind": spec["kind"],
        "state": row["state"], "reason": row["reason"], "tasks": spec["tasks"],
        "created_ms": row["created_ms"], "deadline_ms": row["deadline_ms"],
    }  # fmt: skip


async def _job_detail(manager: JobManager, job_id: bytes, settings: Settings) -> dict[str, Any]:
    store = manager.store
    row = await store.job(job_id)
    assert row is not None
    attempts = await store.attempts(job_id)
    checkpoints = await store.checkpoints(job_id)
    tasks = []
    for task in await store.tasks(job_id):
        tasks.append({
            "task": task.idx, "state": task.state, "attempt": task.attempt,
            "worker": task.worker, "reason": task.reason,
            "checkpoints": sum(1 for c in checkpoints if c["idx"] == task.idx),
        })  # fmt: skip
    spent = sum(int(a["payable_wei"] or a["vouched_wei"]) for a in attempts)
    return _job_summary(row) | {
        "spec": json.loads(row["spec"]),
        "task_states": tasks,
        "attempts": [_attempt_view(a) for a in attempts],
        "cost_wei": str(spent),
        "token": settings.chain.token or None,  # what cost_wei counts: None, the native coin
        "verification": await verification_view(
            manager.store.db,
            job_id,
            json.loads(row["spec"]),
            tasks,
            attempts,
            sample_size=settings.verify.sample_size,
        ),
    }


def _attempt_view(a: Any) -> dict[str, Any]:
    return {
        "task": a["idx"], "attempt": a["attempt"], "worker": a["worker"],
        "price_wei_per_s": a["price_wei"], "gpus": a["gpus"], "started_ms": a["started_ms"],
        "ended_ms": a["ended_ms"], "vouched_wei": a["vouched_wei"],
        "payable_wei": a["payable_wei"], "outcome": a["outcome"],
    }  # fmt: skip


def _bid_view(b: Any) -> dict[str, Any]:
    return {
        "task": b["idx"], "attempt": b["attempt"], "worker": b["worker"],
        "price_wei_per_s": b["price_wei"], "gpus": b["gpus"], "est_s": b["est_s"],
        "received_ms": b["received_ms"], "outcome": b["outcome"] or "not chosen",
    }  # fmt: skip
