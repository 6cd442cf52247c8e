"""The anchoring service on sentries: drives :class:`consensus.settlement.anchoring.Anchoring`
against the chain. Register it in ``node/roles.py`` under ``sentry`` once proof-of-compute feeds
it verified vouchers (``vouchers`` below); it needs the node's :class:`ChainService`.

Each ``poll_s``: take the vouchers that arrived, read the pending anchor's disputes, answers and
void from the contract's events, tell the machine the chain time, and carry out its effects.
Limit: the machine lives in memory; after a restart it starts from an empty base.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from consensus.settlement.anchoring import Anchoring, Answer, Effect, Finalize, Post
from consensus.settlement.epoch import Entry, Spend
from node.chain.client import Settlement
from node.chain.errors import ChainError
from node.chain.service import ChainService

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
Notify = Callable[[str, Any], None]


async def run_anchoring(
    service: ChainService,
    machine: Anchoring,
    vouchers: trio.MemoryReceiveChannel[tuple[Entry, bytes, Spend]],
    *,
    poll_s: float = 5.0,
    notify: Notify | None = None,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs until cancelled. ``notify(step, detail)`` reports posted/answered/finalized/voided."""
    tell: Notify = notify or (lambda step, detail: None)
    seen: set[bytes] = set()
    task_status.started()
    while True:
        with trio.move_on_after(poll_s) as window:
            async for entry, signature, spend in vouchers:
                machine.on_voucher(entry, signature)
                machine.on_spend(spend)
        if not window.cancelled_caught:  # every sender is gone: keep polling the chain
            await trio.sleep(poll_s)
        effects = await _observe(service, machine, seen, tell)
        now_ms = await service.call(lambda c: c.chain.now() * 1000)
        for effect in [*effects, *machine.on_tick(now_ms)]:
            await _perform(service, machine, effect, tell)


async def _observe(
    service: ChainService, machine: Anchoring, seen: set[bytes], tell: Notify
) -> list[Effect]:
    if machine.state != "pending":
        return []
    index = machine.index
    disputed, answered, voided = await service.call(lambda c: _events(c, index))
    if voided:
        machine.on_voided(index)
        tell("voided", index)
        return []
    effects: list[Effect] = []
    for leaf in disputed - seen:
        seen.add(leaf)
        effects += machine.on_disputed(index, leaf)
    for leaf in answered & machine.open_disputes:
        machine.on_answered(leaf)
    return effects


def _events(c: Settlement, index: int) -> tuple[set[bytes], set[bytes], bool]:
    disputed = {bytes(e["args"]["leaf"]) for e in c.events("Disputed", epoch=index)}
    answered = {bytes(e["args"]["leaf"]) for e in c.events("Answered", epoch=index)}
    voided = bool(c.events("Voided", epoch=index))
    return disputed, answered, voided


async def _perform(service: ChainService, machine: Anchoring, effect: Effect, tell: Notify) -> None:
    try:
        if isinstance(effect, Post):
            await service.call(lambda c: c.post_anchor(effect.epoch, effect.spends))
            latest = await service.call(lambda c: c.anchor())
            machine.on_posted(latest["epoch"], latest["dispute_deadline"] * 1000)
            tell("posted", effect.epoch)
        elif isinstance(effect, Answer):
            await service.call(lambda c: c.answer(effect.index, effect.entry, effect.signature))
            tell("answered", effect.entry)
        elif isinstance(effect, Finalize):
            await service.call(lambda c: c.finalize(effect.index))
            tell("finalized", effect.index)
    except ChainError as exc:
        log.warning("anchoring: %s failed: %s", type(effect).__name__, exc)
        if isinstance(effect, Post):
            machine.on_post_failed()
