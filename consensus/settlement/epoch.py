"""Epoch assembly: from the latest voucher of every (job, task, worker) line, the two trees and
the per-requester debits that one anchor posts.

Pure and deterministic: every sentry assembling the same verified vouchers gets the same roots.
Entries carry cumulative voucher amounts and ``previous``, the line's amount in the last final
anchor (so the contract can check what an entry adds, see ``EpochAudits.sol``); an epoch debits
each requester the increase of its lines over the previous anchor (gross), and credits each
worker's cumulative earnings leaf with its share of that, net of the protocol fee. The contract
takes ``floor(total * fee_bps / 10000)`` when the epoch becomes final, so the net credits are
made to add up to exactly the rest: each worker gets ``floor(gross_w * net / total)`` and the
few wei of rounding go one each to the workers first by address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from consensus.errors import Invalid
from consensus.settlement.eip712 import BPS
from consensus.settlement.merkle import EARNINGS_TYPES, ENTRY_TYPES, MerkleTree, leaf_hash

Line = tuple[bytes, bytes, bytes]  # (job, task, worker)


@dataclass(frozen=True)
class Entry:
    """One voucher line as anchored: ``amount`` is the requester's cumulative voucher,
    ``previous`` the line's amount in the last final anchor (set by :func:`assemble`)."""

    requester: bytes  # 20-byte address
    worker: bytes
    job: bytes  # bytes32
    task: bytes
    amount: int
    previous: int = 0

    def row(self) -> list[object]:
        return [self.requester, self.worker, self.job, self.task, self.amount, self.previous]

    @property
    def added(self) -> int:
        """What this entry adds in its epoch."""
        return self.amount - self.previous

    def leaf(self) -> bytes:
        return leaf_hash(ENTRY_TYPES, self.row())

    @property
    def line(self) -> Line:
        return (self.job, self.task, self.worker)


@dataclass(frozen=True)
class Spend:
    """A requester's signed ``Spend``: anchors may debit its pool ``cumulative`` in all, ever
    (``signature``: EIP-712, checked by whoever receives it; the contract checks it again)."""

    requester: bytes  # 20-byte address
    cumulative: int
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.requester) != 20:
            raise Invalid("spend.requester", f"must be 20 bytes, got {len(self.requester)}")
        if not isinstance(self.cumulative, int) or self.cumulative < 0:
            raise Invalid("spend.cumulative", f"must be a uint256 in wei, got {self.cumulative!r}")


@dataclass(frozen=True)
class Epoch:
    entries: tuple[Entry, ...]
    earnings: dict[bytes, int]  # worker -> cumulative earnings over all epochs (net of fees)
    debits: dict[bytes, int]  # requester -> paid by its pool this epoch (gross)
    entries_tree: MerkleTree
    earnings_tree: MerkleTree
    lines: dict[Line, int] = field(default_factory=dict)  # cumulative per line after this epoch

    @property
    def total(self) -> int:
        return sum(self.debits.values())

    def earnings_proof(self, worker: bytes) -> list[bytes]:
        return self.earnings_tree.proof(leaf_hash(EARNINGS_TYPES, [worker, self.earnings[worker]]))

    def entry_proof(self, entry: Entry) -> list[bytes]:
        return self.entries_tree.proof(entry.leaf())


def assemble(
    entries: Iterable[Entry],
    prev_lines: Mapping[Line, int],
    prev_earnings: Mapping[bytes, int],
    fee_bps: int,
) -> Epoch:
    """The next epoch over ``entries`` (verified tasks' latest vouchers), after the last final one.

    Raises:
        Invalid: two entries for one line, an amount below what was already anchored, or an
            epoch with nothing new in it.
    """
    if not 0 <= fee_bps <= BPS:
        raise Invalid("epoch.fee_bps", f"must be in 0..{BPS}, got {fee_bps}")
    lines = dict(prev_lines)
    gross: dict[bytes, int] = {}
    debits: dict[bytes, int] = {}
    kept: list[Entry] = []
    seen: set[Line] = set()
    for e in entries:
        if e.line in seen:
            raise Invalid(
                "epoch.entries", f"two entries for job 0x{e.job.hex()} task 0x{e.task.hex()}"
            )
        seen.add(e.line)
        before = lines.get(e.line, 0)
        if e.amount < before:
            raise Invalid("epoch.entries", f"amount {e.amount} below {before} already anchored")
        if e.amount == before:
            continue
        lines[e.line] = e.amount
        gross[e.worker] = gross.get(e.worker, 0) + e.amount - before
        debits[e.requester] = debits.get(e.requester, 0) + e.amount - before
        kept.append(replace(e, previous=before))
    if not kept:
        raise Invalid("epoch.entries", "nothing new to anchor")
    earnings = dict(prev_earnings)
    for worker, net in net_shares(gross, fee_bps).items():
        earnings[worker] = earnings.get(worker, 0) + net
    return Epoch(
        entries=tuple(kept),
        earnings=earnings,
        debits=dict(sorted(debits.items())),
        entries_tree=MerkleTree.of(ENTRY_TYPES, [e.row() for e in kept]),
        earnings_tree=MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(earnings.items())]),
        lines=lines,
    )


def net_shares(gross: Mapping[bytes, int], fee_bps: int) -> dict[bytes, int]:
    """Split the total less ``floor(total * fee_bps / BPS)`` in proportion to ``gross``, exactly."""
    total = sum(gross.values())
    net = total - total * fee_bps // BPS
    shares = {w: g * net // total for w, g in sorted(gross.items())}
    for w in list(shares)[: net - sum(shares.values())]:
        shares[w] += 1
    return shares
