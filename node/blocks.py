"""Peers the operator blocked: kept in sqlite, enforced by the host's gate, served on the API.

``idlegrid peers block PEER [--for DURATION]`` disconnects the peer at once; from then on it is
not dialled, its connections are closed as soon as they are identified, and its gossip and
stream requests are dropped (see :mod:`p2p.gate`). The block is a row in ``peer_blocks``,
restored into the gate when the node starts, so it outlives restarts until it runs out or
``idlegrid peers unblock PEER`` lifts it; then the peer is redialled like any other.

Score bans (:mod:`consensus.scores`) use the same gate with source ``"score"``; they live in
memory only and an operator unblock does not lift them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from consensus.errors import Invalid
from consensus.peer_id import public_key_from_peer_id
from node.api import ApiError, Request, Routes
from p2p.gate import OPERATOR, Block
from storage.db import Database

if TYPE_CHECKING:
    from node.daemon import NodeContext
    from p2p.host import Host

log = logging.getLogger(__name__)

MAX_BLOCK_S: Final = 10 * 365 * 86400  # --for beyond this is a typo, not a plan
MAX_REASON_CHARS: Final = 200


async def restore_blocks(db: Database, host: Host) -> int:
    """Puts the operator's unexpired blocks back into ``host``'s gate (closing any connection
    the peer made in the meantime); returns how many."""
    now = host.gate.clock()
    await db.execute("DELETE FROM peer_blocks WHERE until_ms IS NOT NULL AND until_ms <= ?", (now,))
    rows = await db.query("SELECT peer_id, since_ms, until_ms, reason FROM peer_blocks")
    for row in rows:
        await host.block(
            Block(row["peer_id"], OPERATOR, row["since_ms"], row["until_ms"], row["reason"])
        )
    return len(rows)


async def block_peer(
    db: Database, host: Host, peer_id: str, for_s: int | None, reason: str = ""
) -> Block:
    """Records the block, then enforces it (so a crash in between still blocks on restart)."""
    now = host.gate.clock()
    block = Block(peer_id, OPERATOR, now, None if for_s is None else now + 1000 * for_s, reason)
    await db.execute(
        "INSERT INTO peer_blocks(peer_id, since_ms, until_ms, reason) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(peer_id) DO UPDATE SET since_ms = excluded.since_ms, "
        "until_ms = excluded.until_ms, reason = excluded.reason",
        (peer_id, block.since_ms, block.until_ms, reason),
    )
    await host.block(block)
    log.info("peer blocked", extra={"peer": peer_id, "until_ms": block.until_ms, "why": reason})
    return block


async def unblock_peer(db: Database, host: Host, peer_id: str) -> bool:
    """Lifts the operator's block; False if there was none (an expired one counts as none)."""
    deleted = await db.execute("DELETE FROM peer_blocks WHERE peer_id = ?", (peer_id,))
    lifted = host.unblock(peer_id, OPERATOR)
    log.info("peer unblocked", extra={"peer": peer_id, "was_blocked": lifted})
    return lifted or deleted > 0


def block_view(block: Block) -> dict[str, Any]:
    return {
        "peer_id": block.peer_id,
        "source": block.source,
        "since_ms": block.since_ms,
        "until_ms": block.until_ms,
        "reason": block.reason,
    }


def block_routes(ctx: NodeContext) -> Routes:
    """``POST /v1/peers/block`` ``{peer_id, for_s?, reason?}``, ``POST /v1/peers/unblock``."""

    def host() -> Host:
        if ctx.network is None:
            raise ApiError(409, "the network is not up yet")
        return ctx.network.host

    async def block(request: Request) -> Any:
        body = _body(request)
        peer_id = _peer_id(body, ctx.keys.peer_id)
        for_s = body.get("for_s")
        if for_s is not None and (type(for_s) is not int or not 1 <= for_s <= MAX_BLOCK_S):
            raise ApiError(400, f"for_s: expected whole seconds from 1 to {MAX_BLOCK_S}")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise ApiError(400, f"reason: expected a string of at most {MAX_REASON_CHARS} chars")
        done = await block_peer(ctx.db, host(), peer_id, for_s, reason)
        return {"blocked": block_view(done)}

    async def unblock(request: Request) -> Any:
        peer_id = _peer_id(_body(request), ctx.keys.peer_id)
        return {"peer_id": peer_id, "unblocked": await unblock_peer(ctx.db, host(), peer_id)}

    return {("POST", "/v1/peers/block"): block, ("POST", "/v1/peers/unblock"): unblock}


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    return body


def _peer_id(body: dict[str, Any], own: str) -> str:
    peer_id = body.get("peer_id")
    if not isinstance(peer_id, str):
        raise ApiError(400, "peer_id: missing (a peer id, 12D3KooW...)")
    try:
        public_key_from_peer_id(peer_id)
    except (Invalid, ValueError) as exc:
        raise ApiError(400, f"peer_id: not a peer id ({exc}): {peer_id!r}") from None
    if peer_id == own:
        raise ApiError(400, "peer_id: that is this node's own id")
    return peer_id
