"""The earnings leaves of a final epoch, split into messages and put back together.

Why parts: the earnings tree holds every worker ever paid (cumulative), and one gossip message
holds at most MAX_LEAVES of them. Why whole trees rather than one proof per worker: a worker
rebuilds the tree and so checks it against the contract's root itself, trusting no anchorer.

    the anchorer   leaves_parts(earnings)  ->  (part, parts, workers, amounts), sorted workers
    a worker       LeavesAssembly(first).add(message)...  ->  FinalLeaves once every part came
                   and the whole hashes to the root (the caller compared it with the chain's)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from consensus.errors import Invalid
from consensus.kinds import Wei
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, leaf_hash
from consensus.settlement.messages import MAX_LEAVES, MAX_PARTS, EpochLeaves
from consensus.settlement.shown import ShownLeaves


@dataclass(frozen=True)
class FinalLeaves:
    """Every earnings leaf of epoch ``index``, checked against ``earnings_root``: gossiped (the
    canonical tree over ``amounts``), or ``shown`` on chain in parts (whatever tree the
    anchorer posted, maybe with two leaves for a worker: ``amounts`` holds the larger)."""

    index: int
    earnings_root: bytes
    amounts: dict[bytes, int]  # worker -> cumulative net earnings
    shown: ShownLeaves | None = None

    @classmethod
    def of_shown(cls, index: int, earnings_root: bytes, shown: ShownLeaves) -> FinalLeaves:
        """The leaves ``shown`` on chain for epoch ``index``.

        Raises:
            Invalid: the parts do not hash to ``earnings_root``.
        """
        if shown.root() != earnings_root:
            raise Invalid("leaves.earnings_root", "the leaves shown do not hash to it")
        return cls(index, earnings_root, shown.amounts(), shown)

    def tree(self) -> MerkleTree:
        """The canonical tree over ``amounts`` (a shown tree may be another: see proof_of)."""
        return MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(self.amounts.items())])

    def proof_of(self, worker: bytes) -> list[bytes]:
        """The proof of ``worker``'s leaf in the tree that hashes to ``earnings_root``."""
        amount = self.amounts[worker]
        if self.shown is not None:
            return self.shown.proof(worker, amount)
        return self.tree().proof(leaf_hash(EARNINGS_TYPES, [worker, amount]))


MAX_PAYOUT = 64  # workers per payout transaction: about 1M gas at most, well under a block


@dataclass(frozen=True)
class PayoutBatch:
    """The arguments of one ``payout``: leaves in the multiproof's order."""

    workers: tuple[bytes, ...]
    cumulatives: tuple[int, ...]
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]


def payout_due(
    amounts: Mapping[bytes, int], earned: Mapping[bytes, int], min_wei: int
) -> list[bytes]:
    """The workers, ascending, whose final leaf exceeds what they received by ``min_wei``."""
    return [w for w in sorted(earned) if amounts.get(w, 0) - earned[w] >= max(min_wei, 1)]


def payout_batches(
    tree: MerkleTree, amounts: Mapping[bytes, int], workers: Sequence[bytes]
) -> list[PayoutBatch]:
    """``workers`` (each with a leaf in ``tree``) in batches of at most MAX_PAYOUT."""
    batches = []
    for i in range(0, len(workers), MAX_PAYOUT):
        by_leaf = {
            leaf_hash(EARNINGS_TYPES, [w, amounts[w]]): w for w in workers[i : i + MAX_PAYOUT]
        }
        mp = tree.multi_proof(list(by_leaf))
        paid = tuple(by_leaf[leaf] for leaf in mp.leaves)
        batches.append(PayoutBatch(paid, tuple(amounts[w] for w in paid), mp.proof, mp.flags))
    return batches


def leaves_parts(
    earnings: Mapping[bytes, int], per_message: int = MAX_LEAVES
) -> list[tuple[int, int, list[bytes], list[Wei]]]:
    """``(part, parts, workers, amounts)`` per message, workers ascending across the parts.

    Raises:
        Invalid: no earnings, or more than MAX_PARTS messages' worth.
    """
    if not 0 < per_message <= MAX_LEAVES:
        raise ValueError(f"per_message must be 1 to {MAX_LEAVES}")
    workers = sorted(earnings)
    chunks = [workers[i : i + per_message] for i in range(0, len(workers), per_message)]
    if not chunks or len(chunks) > MAX_PARTS:
        raise Invalid("leaves.parts", f"{len(workers)} workers make {len(chunks)} parts")
    return [(i, len(chunks), c, [Wei(earnings[w]) for w in c]) for i, c in enumerate(chunks)]


@dataclass
class LeavesAssembly:
    """Collects the parts of one ``(index, earnings_root)``; keeps the first copy of each."""

    index: int
    earnings_root: bytes
    parts: int
    received: dict[int, EpochLeaves] = field(default_factory=dict)

    @classmethod
    def first(cls, message: EpochLeaves) -> LeavesAssembly:
        return cls(message.index, message.earnings_root, message.parts)

    def matches(self, message: EpochLeaves) -> bool:
        key = (message.index, message.earnings_root, message.parts)
        return key == (self.index, self.earnings_root, self.parts)

    def add(self, message: EpochLeaves) -> FinalLeaves | None:
        """The whole epoch once its last part arrives, else None.

        Raises:
            Invalid: the message belongs to another assembly, or the complete set is out of
                order or does not hash to the root (someone sent parts of a forged set).
        """
        if not self.matches(message):
            raise Invalid("leaves.part", "belongs to another epoch, root or split")
        self.received.setdefault(message.part, message)
        if len(self.received) < self.parts:
            return None
        workers = [w for i in range(self.parts) for w in self.received[i].workers]
        amounts = [a for i in range(self.parts) for a in self.received[i].amounts]
        if any(a >= b for a, b in pairwise(workers)):
            raise Invalid("leaves.workers", "parts overlap or are out of order")
        whole = FinalLeaves(
            self.index, self.earnings_root, dict(zip(workers, amounts, strict=True))
        )
        if whole.tree().root != self.earnings_root:
            raise Invalid("leaves.earnings_root", "the leaves do not hash to it")
        return whole
