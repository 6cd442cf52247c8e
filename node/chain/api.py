"""``GET /v1/chain`` (the node's chain: backend, account, balances, open transactions, and what
each role does with it) and ``POST /v1/chain/claim`` (a worker claims its anchored earnings now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.api import ApiError, Request, Routes

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

    return {("GET", "/v1/chain"): status, ("POST", "/v1/chain/claim"): claim}
