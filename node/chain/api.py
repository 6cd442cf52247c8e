"""``GET /v1/chain`` (the node's chain: backend, account, balances, open transactions, and what
each role does with it), ``POST /v1/chain/claim`` (a worker claims its anchored earnings now)
and ``POST /v1/chain/dispute`` (a requester disputes its entries of the pending epoch now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.api import ApiError, Request, Routes
from node.chain.errors import DisputeRefused

if TYPE_CHECKING:
    from node.daemon import NodeContext


def chain_routes(ctx: NodeContext) -> Routes:
    async def status(_: Request) -> Any:
        if ctx.chain is None:
            return {"settle": False}
        return {"settle": True, **await ctx.chain.status()}

    async def claim(_: Request) -> Any:
        if ctx.chain is None or ctx.chain.payee is None:
            raise ApiError(409, "this node does not settle as a worker (chain.settle, worker role)")
        return await ctx.chain.payee.claim(1)

    async def dispute(request: Request) -> Any:
        if ctx.chain is None or ctx.chain.disputer is None:
            raise ApiError(409, "this node does not settle as a requester (chain.settle, "
                                "requester role)")  # fmt: skip
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "a JSON object: epoch, job, worker, task (optional), dry_run")
        try:
            epoch = _int(body, "epoch")
            job, worker = _hex(body, "job", 32), _hex(body, "worker", 20)
            task = None if body.get("task") is None else _hex(body, "task", 32)
            return await ctx.chain.disputer.by_hand(
                epoch, job, worker, task, dry_run=bool(body.get("dry_run"))
            )
        except DisputeRefused as exc:
            raise ApiError(409, str(exc)) from None

    return {
        ("GET", "/v1/chain"): status,
        ("POST", "/v1/chain/claim"): claim,
        ("POST", "/v1/chain/dispute"): dispute,
    }


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(400, f"{key}: a non-negative integer, got {value!r}")
    return value


def _hex(body: dict[str, Any], key: str, size: int) -> bytes:
    value = body.get(key)
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if not isinstance(value, str) or len(raw) != size:
        raise ApiError(400, f"{key}: 0x and {size} bytes of hex, got {value!r}")
    return raw
