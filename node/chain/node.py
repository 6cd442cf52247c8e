"""The chain inside the daemon: one :class:`ChainService` per node, started before the roles
when ``chain.settle`` is on, and what each role hangs on it (escrow, payee, anchorer).

With ``backend = "rpc"`` every node of a network talks to the same chain and contract, which is
what lets a requester's vouchers pay a worker. The chain must answer at start-up (a wrong
``rpc_url``, chain id or contract stops the daemon with the key named); an outage later only
delays settlement: writes wait in the journal and are retried (see :mod:`node.chain.service`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import Domain
from node.chain.errors import ChainError
from node.chain.hook import SettlementHook
from node.chain.service import ChainService, open_settlement

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from config.schema import ChainSettings
    from node.chain.anchorer import Anchorer
    from node.chain.disputer import Disputer
    from node.chain.escrow import Escrow
    from node.chain.payee import Payee
    from node.chain.stakes import Stakes
    from node.daemon import NodeContext

log = logging.getLogger(__name__)
Excluded = Callable[[TaskRef], Awaitable[bool]]


async def nothing_excluded(ref: TaskRef) -> bool:
    return False


@dataclass
class ChainNode:
    """What the roles of one node share of the chain."""

    service: ChainService
    settings: ChainSettings
    address: str
    domain: Domain
    hook: SettlementHook
    escrow: Escrow | None = None  # requester role
    disputer: Disputer | None = None  # requester role
    stakes: Stakes | None = None  # requester role
    payee: Payee | None = None  # worker role
    anchorer: Anchorer | None = None  # sentry role
    # Sentries ask this before anchoring a task's voucher: True drops it (failed verification).
    # Proof-of-compute sets it; until then nothing is excluded.
    excluded: Excluded = field(default=nothing_excluded)

    async def status(self) -> dict[str, Any]:
        def read(c: Any) -> dict[str, Any]:
            open_rows = (
                []
                if c.journal is None
                else c.journal.rows(
                    "pending", "sent", chain_id=c.chain.chain_id, contract=c.contract_address
                )
            )
            return {
                "backend": self.settings.backend,
                "chain_id": c.chain.chain_id,
                "contract": c.contract_address,
                "address": c.address,
                "token": c.token,  # None: amounts are native coin
                "balance_wei": str(c.balance()),  # of the token, when there is one
                "gas_balance_wei": str(c.gas_balance()),
                "pool": {k: str(v) for k, v in c.pool_of().items()},
                "stake": {k: str(v) for k, v in c.stake_of().items()},
                "earned_wei": str(c.earned_of()),
                "epochs": c.epoch_count(),
                "pending_txs": len(open_rows),
                "dry_run": c.dry_run,
            }

        try:
            out = await self.service.call(read)
        except Exception as exc:  # an outage must not break the status page
            out = {"backend": self.settings.backend, "address": self.address, "error": str(exc)}
        for name, part in (("escrow", self.escrow), ("disputes", self.disputer),
                           ("payee", self.payee), ("anchorer", self.anchorer)):  # fmt: skip
            if part is not None:
                out[name] = await part.status()
        return out


async def run_chain(
    ctx: NodeContext, *, task_status: TaskStatus[ChainNode] = trio.TASK_STATUS_IGNORED
) -> None:
    """Connects (raising ChainError with the key named if it cannot), then holds the service."""
    settings, key = ctx.settings.chain, ctx.keys.wallet_key
    service = ChainService(lambda: open_settlement(settings, key, ctx.home.db))
    try:
        client = await service.start()
    except ChainError as exc:  # a wrong chain.* key or an endpoint that is down: say which
        log.error("chain settlement cannot start: %s", exc)  # noqa: TRY400 - no traceback
        raise
    ctx.chain = ChainNode(
        service, settings, client.address, client.domain, SettlementHook(client.domain, key)
    )
    log.info(
        "chain connected",
        extra={"backend": settings.backend, "contract": client.contract_address,
               "address": client.address},
    )  # fmt: skip
    task_status.started(ctx.chain)
    await trio.sleep_forever()
