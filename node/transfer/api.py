"""The local API of the dataset service (``idlegrid data ...`` talks to it when a daemon runs).

``POST /v1/data/offer {dataset_id}``: serve a dataset added (or granted) by the CLI;
``POST /v1/data/get {dataset_id, out, from, window, bulk}``: start a fetch, answered at once;
``GET /v1/data/get?dataset_id=``: that fetch's state (progress is in the journal);
``POST /v1/data/remove {dataset_id}``: stop serving it and delete it here.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.api import ApiError, Request, Routes

if TYPE_CHECKING:
    from node.daemon import NodeContext
    from node.transfer.service import DataService


def _dataset_id(value: Any) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(400, f"dataset_id: {value!r:.80} is not 64 hex chars")
    return raw


def data_routes(ctx: NodeContext) -> Routes:
    def service() -> DataService:
        if ctx.data is None:
            raise ApiError(409, "the dataset service is not running")
        return ctx.data

    async def offer(request: Request) -> Any:
        body = request.json() or {}
        dataset_id = _dataset_id(body.get("dataset_id"))
        try:
            grants = await service().offer(dataset_id)
        except KeyError:
            raise ApiError(404, f"dataset {dataset_id.hex()[:16]} is not held whole here") from None
        return {"dataset_id": dataset_id.hex(), "grants": grants}

    async def start_get(request: Request) -> Any:
        body = request.json() or {}
        dataset_id = _dataset_id(body.get("dataset_id"))
        out, sources = body.get("out"), body.get("from", [])
        if not isinstance(out, str) or not Path(out).is_absolute():
            raise ApiError(400, f"out: {out!r:.80} is not an absolute path")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ApiError(400, "from: expected a list of multiaddrs or peer ids")
        window, bulk = body.get("window"), body.get("bulk", True)
        if window is not None and not (isinstance(window, int) and 1 <= window <= 256):
            raise ApiError(400, f"window: {window!r:.20} is not an integer in 1..256")
        job = service().start_get(
            dataset_id, Path(out), sources, {"window": window, "bulk": bool(bulk)}
        )
        return {"dataset_id": dataset_id.hex(), "state": job.state}

    async def remove(request: Request) -> Any:
        body = request.json() or {}
        dataset_id = _dataset_id(body.get("dataset_id"))
        try:
            removed = await service().remove(dataset_id)
        except KeyError:
            raise ApiError(404, f"no dataset {dataset_id.hex()[:16]} here") from None
        except RuntimeError as exc:
            raise ApiError(409, str(exc)) from None
        return {"dataset_id": dataset_id.hex(), **vars(removed)}

    async def get_state(request: Request) -> Any:
        values = urllib.parse.parse_qs(request.query).get("dataset_id") or [""]
        dataset_id = _dataset_id(values[0])
        job = service().jobs.get(dataset_id)
        if job is None:
            raise ApiError(404, f"no data get of {dataset_id.hex()[:16]} since the node started")
        return {"state": job.state, "error": job.error, "result": job.result}

    return {
        ("POST", "/v1/data/offer"): offer,
        ("POST", "/v1/data/get"): start_get,
        ("GET", "/v1/data/get"): get_state,
        ("POST", "/v1/data/remove"): remove,
    }
