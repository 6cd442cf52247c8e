"""Following other anchorers' epochs, so that more than one bonded sentry can anchor a network.

Every anchor's earnings leaves are cumulative over all the epochs before it, and its entries
grow each (job, task, worker) line from what earlier epochs anchored. So an anchorer must
build each epoch on the one before it on chain, whoever posted that one. It *follows* the
epochs others post: it rebuilds each from the entries gossiped while it was pending
(``EpochEntries``) over its own base (:func:`rebuild`), and once that epoch is final takes it
as its base, but only when both rebuilt roots equal the chain's, or the entries root does and
the earnings leaves its anchorer showed on chain (``EpochLeaves.sol``) hash to the earnings
root and give every worker exactly the rebuilt earnings: the leaves are right, only the tree
is not the sorted one (its parts swapped or a lower duplicate leaf added, which the contract
cannot refuse), and claims and proofs are read off the parts as shown. An epoch it cannot rebuild
(its entries were missed, or our base was never the chain's) halts its anchoring until it
can (the driver then asks other anchorers for their history): it must post nothing rather
than leaves that would fall below what workers already claimed, or anchor again lines the
other anchorer took.

Who posts (:func:`may_post`): the anchorer of the latest anchor keeps posting; another takes
over once that anchor is final or void and nothing was posted for ``TAKEOVER_EPOCHS`` epochs
and a dispute window (its anchorer is gone, or had nothing new). Two that post at once are put
in order by the contract, which holds one pending anchor at a time: the second post is refused
and its sender follows the first.

    latest anchor on chain   posted by   we
    none                     -           may post
    any                      us          may post (the anchoring machine decides when)
    pending                  another     stand by; keep the entries gossiped for it
    final or void, recent    another     stand by: it is anchoring
    final or void, silent    another     may post, once we followed every epoch up to it
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry, Epoch, Line, assemble
from consensus.settlement.shown import ShownLeaves

TAKEOVER_EPOCHS = 3
STATES = frozenset({"pending", "final", "void"})


@dataclass(frozen=True)
class ChainAnchor:
    """One anchor as the chain shows it."""

    index: int
    anchorer: bytes  # its 20-byte address
    earnings_root: bytes
    entries_root: bytes
    state: str  # pending, final or void (final: also once nothing can void it any more)
    posted_ms: int  # the block time of its post
    finalized: bool = True  # False: final in all but name, the chain still says pending
    deadline_ms: int = 0  # when its window ends (a leaves answer moves it on); the latest only

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise Invalid("anchor.state", f"expected one of {sorted(STATES)}, got {self.state!r}")


def rebuild(
    anchor: ChainAnchor,
    entries: Iterable[Entry],
    base_lines: Mapping[Line, int],
    base_earnings: Mapping[bytes, int],
    fee_bps: int,
    *,
    shown: ShownLeaves | None = None,
) -> Epoch | None:
    """The epoch ``anchor`` posted, rebuilt over our base from the ``entries`` heard for it;
    None while they do not give both of its roots (some not heard yet, or another base),
    unless the leaves ``shown`` on chain for it stand for the earnings root (see above)."""
    try:
        epoch = assemble(entries, base_lines, base_earnings, fee_bps)
    except (Invalid, ValueError, OverflowError):  # nothing heard, two entries for one line,
        return None  # an amount no tree holds: not the chain's epoch
    if epoch.entries_tree.root != anchor.entries_root:
        return None
    if epoch.earnings_tree.root == anchor.earnings_root or _shown_as(shown, anchor, epoch):
        return epoch
    return None


def _shown_as(shown: ShownLeaves | None, anchor: ChainAnchor, epoch: Epoch) -> bool:
    """Whether ``shown`` hashes to ``anchor``'s earnings root and gives each worker exactly
    ``epoch``'s earnings (its largest leaf, the one a claim takes)."""
    if shown is None:
        return False
    try:
        return shown.root() == anchor.earnings_root and shown.amounts() == epoch.earnings
    except Invalid:
        return False


def may_post(
    latest: ChainAnchor | None, me: bytes, now_ms: int, epoch_ms: int, window_ms: int
) -> bool:
    """Whether we may post the next epoch (given that we followed every one up to ``latest``)."""
    if latest is None or latest.anchorer == me:
        return True
    if latest.state == "pending":
        return False
    return now_ms >= latest.posted_ms + TAKEOVER_EPOCHS * epoch_ms + window_ms
