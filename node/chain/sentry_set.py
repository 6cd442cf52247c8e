"""Which peers count as sentries on a node that settles on chain: those staked as sentries.

Any node can say "sentry" in its hello. Without chain settlement every peer that says so is
a known sentry (:func:`node.verify.service.known_sentries`). With it, a cheat could run
"sentries" of its own: assigned to its task by the rendezvous rule, they would pass it or
judge nothing, while the honest sentries, not assigned, would not judge it either, and the
task would be paid unverified. So a node that settles counts as sentries only peers whose
hello binds a chain account (``Hello.chain_address``, ``binding``) with the contract's
``sentryMinStake`` bonded, itself included. Stakes are read as a bidder's are
(:mod:`node.chain.stakes`: at most once a minute per account, the last reading kept through an
outage), every :data:`REFRESH_S` and at once when a peer is discovered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from node.chain.stakes import Stakes, UnboundAddress

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext

log = logging.getLogger(__name__)
REFRESH_S = 30.0


async def sentry_set(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keeps ``ctx.network.staked_sentries``; one per node, whichever role starts it, and
    none without chain settlement (then every peer that says it is a sentry counts)."""
    net = ctx.network
    assert net is not None
    if ctx.chain is None or net.staked_sentries is not None:
        task_status.started()
        return
    chain = ctx.chain
    minimum = int(await chain.service.call(lambda c: c.params()["sentry_min_stake_wei"]))
    stakes = Stakes(chain, 0, lambda: int(trio.current_time() * 1000), whom="sentry")
    net.staked_sentries = set()
    await refresh(ctx, stakes, minimum)
    task_status.started()
    while True:
        with trio.move_on_after(REFRESH_S):
            await net.discovered.wait()
        await refresh(ctx, stakes, minimum)


async def refresh(ctx: NodeContext, stakes: Stakes, minimum: int) -> None:
    """Reads the stake of every peer that says it is a sentry, and ours if we are one."""
    net = ctx.network
    assert net is not None
    claims = {p.peer_id: p.chain for p in net.book.peers.values() if "sentry" in p.roles}
    if "sentry" in ctx.settings.node.roles:
        claims[ctx.keys.peer_id] = ctx.keys.chain_binding
    staked = set()
    for peer, chain in claims.items():
        if chain is None:
            continue
        try:
            bonded = await stakes.stake_of(peer, "0x" + chain[0].hex(), chain[1])
        except UnboundAddress:
            continue
        if bonded is not None and bonded >= minimum:
            staked.add(peer)
    if staked != net.staked_sentries:
        log.info("staked sentries", extra={"sentries": ",".join(sorted(staked)),
                                           "claiming": len(claims)})  # fmt: skip
    net.staked_sentries = staked
