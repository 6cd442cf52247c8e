"""The anchoring sentry pays workers their final earnings, many in one ``payout`` transaction.

Why the sentry: a worker claiming by itself pays ~52k gas per claim and needs coin for gas
(a new worker on a token deployment has none); one batch per final epoch costs about 30k gas
per worker paid and asks nothing of the workers. Who is due: a worker whose leaf in the final
epoch is at least ``chain.payout_min_wei`` over what it has received (``earned`` on chain).
Only workers whose leaf grew since the last epoch this sentry paid out can be newly due, so
only they are read from the chain (all of them after a restart). Workers still claim as
before (``chain.claim_threshold_wei``); whichever comes first pays, the other finds nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from consensus.settlement.leaves import FinalLeaves, payout_batches, payout_due
from consensus.settlement.merkle import MerkleTree
from consensus.settlement.shown import ShownLeaves
from node.chain.epoch_calls import payout_args
from node.chain.errors import ChainReverted

if TYPE_CHECKING:
    from node.chain.client import Settlement
    from node.chain.service import ChainService

log = logging.getLogger(__name__)


class Payer:
    """Pays out each final epoch once (per process), in batches of at most MAX_PAYOUT."""

    def __init__(self, service: ChainService, min_wei: int) -> None:
        self.service, self.min_wei = service, min_wei
        self.done: FinalLeaves | None = None  # the last epoch paid out
        self.paid = 0  # workers in the batches this process sent
        self._told = -1  # the epoch last logged as not payable
        # a claim root, and the tree (and leaves) shown for it on chain, or None: read once
        self._shown: tuple[bytes, tuple[MerkleTree, dict[bytes, int]] | None] | None = None

    async def pay(self, final: FinalLeaves) -> None:
        """Pays whoever ``final`` makes due; a no-op for an epoch already paid out."""
        if self.min_wei == 0 or (self.done is not None and self.done.index >= final.index):
            return
        before = self.done.amounts if self.done is not None else {}
        grew = [w for w, a in final.amounts.items() if a > before.get(w, 0)]
        earned = await self.service.call(lambda c: c.earned_by(grew))
        due = payout_due(final.amounts, earned, self.min_wei)
        tree = await self._tree(final) if due else None
        if due and tree is None:
            # Not final on chain yet, or a newer epoch is (paid out next): asked again next
            # step, told once.
            if self._told != final.index:
                log.info("epoch not paid out (yet): its tree is not the claim root, or its "
                         "leaves were shown in parts that give no multiproofs (its workers "
                         "claim by themselves)", extra={"epoch": final.index})  # fmt: skip
                self._told = final.index
            return
        if tree is not None:
            for batch in payout_batches(tree, final.amounts, due):
                try:
                    await self.service.submit("payout", payout_args(batch))
                    self.paid += len(batch.workers)
                except ChainReverted as exc:  # e.g. a newer epoch went final meanwhile: next step
                    log.warning("payout of epoch %d refused: %s", final.index, exc)
                    return
            log.info("earnings paid out", extra={"epoch": final.index, "workers": len(due)})
        self.done = final

    async def _tree(self, final: FinalLeaves) -> MerkleTree | None:
        """The tree of ``final`` that is the contract's claim root: the sorted one, or one
        followed from the leaves shown on chain (``consensus.settlement.following``; the
        contract checks their order only within each part); None: neither is."""
        tree = final.tree()
        root = await self.service.call(_claim_root)
        if tree.root == root:
            return tree
        if self._shown is None or self._shown[0] != root:  # once per root: up to 256k leaves
            found = await self.service.call(lambda c: c.leaves_with_root(root))
            rebuilt = None if found is None else await trio.to_thread.run_sync(_rebuilt, found[1])
            self._shown = (root, rebuilt)
        rebuilt = self._shown[1]
        if rebuilt is None or rebuilt[1] != final.amounts:
            return None
        return rebuilt[0]


def _rebuilt(shown: ShownLeaves) -> tuple[MerkleTree, dict[bytes, int]] | None:
    """The whole tree of ``shown`` with each worker's (largest) leaf; None: no whole tree."""
    tree = shown.tree()
    return None if tree is None else (tree, shown.amounts())


def _claim_root(c: Settlement) -> bytes:
    return bytes(c.contract.functions.claimRoot().call())
