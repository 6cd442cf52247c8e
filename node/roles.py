"""Roles composed from services: each role is a nursery that starts its services in order.

A service is an async function ``service(ctx, *, task_status)`` that calls
``task_status.started()`` once it is ready and then runs until cancelled. Later pieces (the
pool, the bidder, the auction, the challenge game, the anchoring service) register here; the
daemon only knows roles, never individual services.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from node.chain.sentry_set import sentry_set
from node.chain.services import (
    anchoring_service,
    requester_settlement,
    slashing_service,
    worker_settlement,
)
from node.market.service import requester_market, worker_market
from node.verify.service import qos_view, requester_verify, sentry_verify, worker_verify

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose stubs shadow trio's own annotations for mypy;
    # they export TaskStatus from trio_typing only.
    from trio_typing import TaskStatus

    from node.daemon import NodeContext

log = logging.getLogger(__name__)

Service = Callable[..., Awaitable[None]]

# role -> the services it runs, in start order; proof-of-compute and settlement add theirs.
SERVICES: dict[str, list[tuple[str, Service]]] = {
    "requester": [
        ("sentries", sentry_set),  # with chain settlement: who counts as a sentry
        ("settlement", requester_settlement),
        ("market", requester_market),
        ("qos", qos_view),
        ("verify", requester_verify),
    ],
    "worker": [
        ("sentries", sentry_set),
        ("settlement", worker_settlement),
        ("market", worker_market),
        ("qos", qos_view),
        ("verify", worker_verify),
    ],
    "sentry": [
        ("sentries", sentry_set),
        ("qos", qos_view),
        ("verify", sentry_verify),
        ("anchoring", anchoring_service),
        ("slashing", slashing_service),
    ],
}


def services_of(role: str) -> list[str]:
    return [name for name, _ in SERVICES[role]]


async def run_role(
    role: str, ctx: NodeContext, *, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Starts every service of ``role``; reports ready only when all of them are."""
    async with trio.open_nursery() as nursery:
        for name, service in SERVICES[role]:
            await nursery.start(service, ctx, name=f"{role}/{name}")
        log.info("role ready", extra={"role": role, "services": services_of(role)})
        task_status.started()
        await trio.sleep_forever()
