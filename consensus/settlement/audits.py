"""Audits of an anchor's sums against its entries (``EpochAudits.sol``), pure: what an anchorer
answers a sum dispute with, and what a watcher disputes.

An entry adds ``amount - previous`` in its epoch. A worker's earnings leaf may grow over its
leaf in the base (the last final root) by at most what its entries add; a requester may be
debited at most what its entries add. So:

    dispute    raised by   when                                    answered with
    earnings   anyone      a worker's leaf grew more than its      its entries and its leaf
                           entries added                           in the base
    debit      requester   it is debited more than its entries     its entries
                           added

The contract checks gross amounts (it knows no worker's share of the fee), so a worker's leaf
is bounded by the vouchers its requesters signed, fee included. An anchorer that assembled its
epoch honestly can always answer (net shares never exceed the gross its entries add, see
:func:`consensus.settlement.epoch.net_shares`); one that moved earnings from one worker to
another beyond that, or debited a requester beyond its entries, cannot, and its anchor is
voided when the answer time runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry, Epoch
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, MultiProof, leaf_hash

EARNINGS, DEBIT = 1, 2  # the contract's ``Sum`` kinds


@dataclass(frozen=True)
class SumAnswer:
    """What ``answerSum`` takes: the party's base leaf and proof, its entries in proof order."""

    base: int
    base_proof: tuple[bytes, ...]
    entries: tuple[Entry, ...]
    proof: MultiProof


def answer(epoch: Epoch, base: Mapping[bytes, int], kind: int, party: bytes) -> SumAnswer:
    """The answer to a sum dispute of ``party`` in ``epoch``, built over ``base`` (the
    earnings of the last final epoch, from which ``epoch`` was assembled).

    Raises:
        Invalid: an unknown kind.
    """
    if kind not in (EARNINGS, DEBIT):
        raise Invalid("audit.kind", f"must be {EARNINGS} (earnings) or {DEBIT} (debit), got {kind}")
    mine = [e for e in epoch.entries if (e.worker if kind == EARNINGS else e.requester) == party]
    by_leaf = {e.leaf(): e for e in mine}
    proof = epoch.entries_tree.multi_proof(list(by_leaf))
    entries = tuple(by_leaf[leaf] for leaf in proof.leaves)
    held = base.get(party, 0) if kind == EARNINGS else 0
    if held == 0:
        return SumAnswer(0, (), entries, proof)
    tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(base.items())])
    return SumAnswer(held, tuple(tree.proof(leaf_hash(EARNINGS_TYPES, [party, held]))), entries,
                     proof)  # fmt: skip


def inflated(
    leaves: Mapping[bytes, int], base: Mapping[bytes, int], entries: Iterable[Entry]
) -> list[bytes]:
    """Workers whose leaf in an anchor (``leaves``, as its anchorer published them) grew over
    ``base`` (the last final epoch's earnings) by more than ``entries`` (the anchor's, as heard)
    add for them, gross: disputes its anchorer cannot answer unless it withheld entries (then
    its answer shows them)."""
    gross: dict[bytes, int] = {}
    for e in entries:
        gross[e.worker] = gross.get(e.worker, 0) + e.added
    return sorted(w for w, a in leaves.items() if a - base.get(w, 0) > gross.get(w, 0))
