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
    leaves     anyone      the earnings leaves were not published  every leaf, in parts
                                                                   (consensus.settlement.shown)
    previous   anyone      an entry's ``previous`` is above its    the line's entry in a final
                           line's amount in the last final anchor  anchor, with that amount
    entries    anyone      the entries were not published          every entry, in parts
                                                                   (consensus.settlement.shown)

A worker's leaf may grow by at most what its entries add net of the fee (:func:`net_ceil`: its
own fee rounded down, plus a wei of the epoch's remainder), so it is bounded by the vouchers its
requesters signed less the fee. An anchorer that assembled its epoch honestly can always answer
(net shares never exceed that, see :func:`consensus.settlement.epoch.net_shares`); one that
moved earnings from one worker to another beyond that, or debited a requester beyond its
entries, cannot, and its anchor is voided when the answer time runs out. From below, a leaf
must grow by at least its worker's entries net of the fee at its most (:func:`net_floor`): one
that grew less voids the anchor at once, with the worker's entries as proof (``voidLowLeaf``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.errors import Invalid
from consensus.settlement.eip712 import BPS
from consensus.settlement.epoch import Entry, Epoch
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, MultiProof, leaf_hash
from consensus.settlement.shown import ShownLeaves

EARNINGS, DEBIT, LEAVES, PREVIOUS, ENTRIES = 1, 2, 3, 4, 5  # the contract's ``Sum`` kinds


@dataclass(frozen=True)
class SumAnswer:
    """What ``answerSum`` takes: the party's base leaf and proof, its entries in proof order."""

    base: int
    base_proof: tuple[bytes, ...]
    entries: tuple[Entry, ...]
    proof: MultiProof


def answer(
    epoch: Epoch, base: Mapping[bytes, int], kind: int, party: bytes, *,
    base_shown: ShownLeaves | None = None,
) -> SumAnswer:  # fmt: skip
    """The answer to a sum dispute of ``party`` in ``epoch``, built over ``base`` (the
    earnings of the last final epoch, from which ``epoch`` was assembled; ``base_shown``: its
    tree as shown on chain, when that is not the sorted one).

    Raises:
        Invalid: an unknown kind.
    """
    return show(epoch.entries, epoch.entries_tree, base, kind, party, base_shown=base_shown)


def show(entries: Iterable[Entry], tree: MerkleTree | None, base: Mapping[bytes, int], kind: int,
         party: bytes, *, base_shown: ShownLeaves | None = None) -> SumAnswer:  # fmt: skip
    """``party``'s entries among ``entries`` (all of those in ``tree``, an anchor's entries
    tree; None: no entries) with their multiproof, and for a worker its leaf in ``base`` with
    its proof: in the sorted tree over ``base``, or in ``base_shown`` (the last final root's
    leaves as shown on chain, a tree that need not be the sorted one).

    Raises:
        Invalid: an unknown kind, or a base leaf ``base_shown`` does not hold.
    """
    if kind not in (EARNINGS, DEBIT):
        raise Invalid("audit.kind", f"must be {EARNINGS} (earnings) or {DEBIT} (debit), got {kind}")
    mine = [e for e in entries if (e.worker if kind == EARNINGS else e.requester) == party]
    by_leaf = {e.leaf(): e for e in mine}
    proof = MultiProof((), (), ()) if tree is None or not mine else tree.multi_proof(list(by_leaf))
    shown = tuple(by_leaf[leaf] for leaf in proof.leaves)
    held = base.get(party, 0) if kind == EARNINGS else 0
    if held == 0:
        return SumAnswer(0, (), shown, proof)
    if base_shown is not None:
        return SumAnswer(held, tuple(base_shown.proof(party, held)), shown, proof)
    base_tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(base.items())])
    return SumAnswer(held, tuple(base_tree.proof(leaf_hash(EARNINGS_TYPES, [party, held]))),
                     shown, proof)  # fmt: skip


def net_floor(gross: int, fee_bps: int) -> int:
    """The least a worker's leaf grows for entries adding ``gross`` (the contract's
    ``_netFloor``): the epoch's fee, ``floor(total * fee_bps / BPS)``, is split in proportion to
    each worker's gross (:func:`consensus.settlement.epoch.net_shares`), so no worker's share
    is below its gross less its own fee rounded up."""
    return gross - (gross * fee_bps + BPS - 1) // BPS


def net_ceil(gross: int, fee_bps: int) -> int:
    """The most a worker's leaf grows for entries adding ``gross`` (the contract's
    ``_netCeil``): its gross less its own fee rounded down, plus a wei of the epoch's
    remainder, and never above the gross."""
    return min(gross, gross - gross * fee_bps // BPS + 1)


def lowered(
    leaves: Mapping[bytes, int], base: Mapping[bytes, int], entries: Iterable[Entry],
    fee_bps: int,
) -> list[bytes]:  # fmt: skip
    """Workers with a leaf in an anchor (``leaves``) that grew over ``base`` by less than
    ``entries`` (the anchor's, every one heard) add for them, net of the fee at its most, or
    that fell below ``base`` (with no entries at all: a leaf never shrinks): paid less than
    they earned, which voids the anchor at once."""
    gross = _gross_by_worker(entries)
    owed = gross.keys() | {w for w, a in base.items() if a > 0}
    return sorted(w for w in owed & leaves.keys()
                  if leaves[w] - base.get(w, 0) < net_floor(gross.get(w, 0), fee_bps))  # fmt: skip


def inflated(
    leaves: Mapping[bytes, int], base: Mapping[bytes, int], entries: Iterable[Entry],
    fee_bps: int,
) -> list[bytes]:  # fmt: skip
    """Workers whose leaf in an anchor (``leaves``, as its anchorer published them) grew over
    ``base`` (the last final epoch's earnings) by more than ``entries`` (the anchor's, as heard)
    add for them, net of the fee (:func:`net_ceil`): disputes its anchorer cannot answer unless
    it withheld entries (then its answer shows them)."""
    gross = _gross_by_worker(entries)
    return sorted(w for w, a in leaves.items()
                  if a - base.get(w, 0) > net_ceil(gross.get(w, 0), fee_bps))  # fmt: skip


def left_out(
    leaves: Mapping[bytes, int], base: Mapping[bytes, int], entries: Iterable[Entry],
    fee_bps: int,
) -> list[bytes]:  # fmt: skip
    """Workers an anchor's ``leaves`` do not name, though they held a leaf in ``base`` (the
    last final epoch's earnings) or ``entries`` (the anchor's, as heard) pay them at least a
    wei net of the fee: their pay would be lost, which voids the anchor (``voidMissingLeaf``)
    once the leaves are shown on chain."""
    gross = _gross_by_worker(entries)
    owed = {w for w, a in base.items() if a > 0} | {
        w for w, g in gross.items() if net_floor(g, fee_bps) > 0
    }
    return sorted(owed - leaves.keys())


def _gross_by_worker(entries: Iterable[Entry]) -> dict[bytes, int]:
    """What ``entries`` add this epoch for each worker, before the fee."""
    gross: dict[bytes, int] = {}
    for e in entries:
        gross[e.worker] = gross.get(e.worker, 0) + e.added
    return gross
