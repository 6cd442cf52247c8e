"""Settlement on gossip (topic ``anchors``): what workers tell anchorers and anchorers tell workers.

    worker    SettledVoucher  --gossip anchors-->  sentries (anchorers) check the requester's
                                                   EIP-712 signature and keep the largest per line
    sentry    EpochLeaves     --gossip anchors-->  workers rebuild the earnings tree, check its
                                                   root against the contract, claim with a proof
    requester VoucherCap      --gossip anchors-->  sentries pay that lost attempt no more than
                                                   its seconds up to the checkpoint kept

No message needs trust: a voucher and a cap carry the requester's chain signatures, and the
leaves are only used when they hash to the root the contract holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from consensus.errors import Invalid
from consensus.kinds import Body, Wei, exact_size
from consensus.market.messages import HASH_LEN, TaskRef
from consensus.settlement.eip712 import chain_job_id, chain_task_id
from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree

ADDRESS_LEN = 20
SIGNATURE_LEN = 65
MAX_LEAVES = 1200  # about 45 bytes each: an EpochLeaves envelope stays under gossip's 64 KiB


@dataclass(frozen=True, kw_only=True)
class SettledVoucher(Body):
    """A worker's latest requester-signed voucher for one task attempt, for anchoring."""

    KIND: ClassVar[str] = "settlement.voucher/1"
    ref: TaskRef
    requester: bytes = field(metadata=exact_size(ADDRESS_LEN))
    worker: bytes = field(metadata=exact_size(ADDRESS_LEN))
    amount_wei: Wei
    signature: bytes = field(metadata=exact_size(SIGNATURE_LEN))

    def entry(self) -> Entry:
        return entry_of(self.ref, self.requester, self.worker, self.amount_wei)


@dataclass(frozen=True, kw_only=True)
class VoucherCap(Body):
    """The requester closes one task attempt at ``amount_wei``: its worker was lost, and only
    the seconds up to the checkpoint the task resumed from are owed (the market's
    ``payable_after_failover``). Anchorers never anchor more for that line.

    ``cap_sig`` is the requester's EIP-712 ``VoucherCap`` signature; ``voucher_sig`` its
    ordinary voucher signature for exactly ``amount_wei`` (what answers a dispute of the capped
    entry), empty when nothing is owed.
    """

    KIND: ClassVar[str] = "settlement.cap/1"
    ref: TaskRef
    requester: bytes = field(metadata=exact_size(ADDRESS_LEN))
    worker: bytes = field(metadata=exact_size(ADDRESS_LEN))
    amount_wei: Wei
    cap_sig: bytes = field(metadata=exact_size(SIGNATURE_LEN))
    voucher_sig: bytes

    def __post_init__(self) -> None:
        wanted = SIGNATURE_LEN if self.amount_wei > 0 else 0
        if len(self.voucher_sig) != wanted:
            raise Invalid("cap.voucher_sig", f"{wanted} bytes for {self.amount_wei} wei")

    def entry(self) -> Entry:
        return entry_of(self.ref, self.requester, self.worker, self.amount_wei)


@dataclass(frozen=True, kw_only=True)
class EpochLeaves(Body):
    """The earnings leaves of anchored epoch ``index``: (worker, cumulative net earnings)."""

    KIND: ClassVar[str] = "settlement.leaves/1"
    index: int
    earnings_root: bytes = field(metadata=exact_size(HASH_LEN))
    workers: list[bytes]
    amounts: list[Wei]

    def __post_init__(self) -> None:
        if len(self.workers) != len(self.amounts):
            raise Invalid("leaves.amounts", "one amount per worker")
        if not self.workers or len(self.workers) > MAX_LEAVES:
            raise Invalid("leaves.workers", f"1 to {MAX_LEAVES} leaves")
        if any(len(w) != ADDRESS_LEN for w in self.workers):
            raise Invalid("leaves.workers", "20-byte addresses")

    def tree(self) -> MerkleTree:
        """The earnings tree; raises Invalid unless it hashes to ``earnings_root``."""
        tree = MerkleTree.of(
            EARNINGS_TYPES, [[w, a] for w, a in zip(self.workers, self.amounts, strict=True)]
        )
        if tree.root != self.earnings_root:
            raise Invalid("leaves.earnings_root", "the leaves do not hash to it")
        return tree


def entry_of(ref: TaskRef, requester: bytes, worker: bytes, amount_wei: int) -> Entry:
    """The anchored entry for the chain voucher twin of a market voucher for ``ref``."""
    return Entry(
        requester=requester,
        worker=worker,
        job=chain_job_id(ref.job_id),
        task=chain_task_id(ref.task, ref.attempt),
        amount=amount_wei,
    )


SETTLEMENT_KINDS: tuple[type[Body], ...] = (SettledVoucher, VoucherCap, EpochLeaves)
