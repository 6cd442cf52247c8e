"""The settlement services each role runs (registered in ``node/roles.py``).

Each one is idle on a node without ``chain.settle`` (so roles need not change with the config),
and imports web3 only when it does run: a node that does not settle never pays for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from consensus.verify.messages import Verdict
    from node.daemon import NodeContext

log = logging.getLogger(__name__)
SLASH_CASES_KEPT_MS = 7 * 24 * 3600 * 1000  # failing verdicts a restarted slasher reads back


async def requester_settlement(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Escrow per job, signed vouchers, caps on lost attempts (``node.chain.caps``) and
    disputes of anchored entries it never signed (``node.chain.disputer``); started before the
    market, which uses it."""
    if ctx.chain is None:
        task_status.started()
        return
    from node.chain.caps import Caps  # noqa: PLC0415
    from node.chain.disputer import Disputer  # noqa: PLC0415
    from node.chain.escrow import Escrow  # noqa: PLC0415
    from node.chain.stakes import Stakes  # noqa: PLC0415
    from node.market.service import market_of  # noqa: PLC0415

    net = market_of(ctx).net
    ctx.chain.escrow = Escrow(ctx.chain, ctx.db, ctx.settings.chain.poll_s)
    ctx.chain.disputer = Disputer(ctx.chain, ctx.db, net)
    min_stake = ctx.settings.chain.min_worker_stake_wei
    ctx.chain.stakes = Stakes(ctx.chain, min_stake, net.now_ms)
    async with trio.open_nursery() as nursery:
        await nursery.start(ctx.chain.escrow.run)
        await nursery.start(Caps(ctx.chain, ctx.db, net, ctx.chain.escrow.spending).run)
        await nursery.start(ctx.chain.disputer.run)
        task_status.started()


async def worker_settlement(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Checks and keeps chain vouchers, submits them to anchorers, claims earnings."""
    if ctx.chain is None:
        task_status.started()
        return
    from node.chain.payee import Payee  # noqa: PLC0415
    from node.market.service import market_of  # noqa: PLC0415

    hold_ms = ctx.settings.verify.verdict_timeout_ms  # sentries hold a task this long at most
    ctx.chain.payee = Payee(ctx.chain, ctx.db, market_of(ctx).net, hold_ms)
    await ctx.chain.payee.run(task_status=task_status)


async def anchoring_service(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Anchors epochs of verified tasks' vouchers; needs a stake of the contract's anchor bond."""
    if ctx.chain is None or not ctx.settings.chain.anchor:
        log.info("sentry without chain.settle or chain.anchor: no anchoring")
        task_status.started()
        return
    from node.chain.anchorer import Anchorer  # noqa: PLC0415
    from node.market.service import market_of  # noqa: PLC0415

    ctx.chain.anchorer = Anchorer(ctx.chain, ctx.db, market_of(ctx).net)
    await ctx.chain.anchorer.run(task_status=task_status)


async def slashing_service(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Turns a quorum of sentries' failing verdicts into one slash of the cheat's stake."""
    if ctx.chain is None:
        task_status.started()
        return
    from node.chain.slasher import Slasher  # noqa: PLC0415
    from node.market.service import market_of  # noqa: PLC0415
    from node.verify.store import VerifyStore  # noqa: PLC0415
    from node.verify.topics import VERDICTS  # noqa: PLC0415

    net = market_of(ctx).net
    store = VerifyStore(ctx.db)

    async def stored() -> list[Verdict]:  # the last week's: older cases had their chance
        return await store.failing_verdicts(net.now_ms() - SLASH_CASES_KEPT_MS)

    await Slasher(ctx.chain, net, VERDICTS, stored).run(task_status=task_status)
