"""Settlement on gossip (topic ``anchors``): what workers tell anchorers and anchorers tell workers.

    worker    SettledVoucher  --gossip anchors-->  sentries (anchorers) check the requester's
                                                   EIP-712 signatures (voucher and spend), keep
                                                   the largest per line and per requester
    sentry    EpochLeaves     --gossip anchors-->  workers rebuild the earnings tree, check its
                                                   root against the contract, claim with a proof
    sentry    EpochEntries    --gossip anchors-->  each requester sees its entries of the pending
                                                   epoch with their proofs, disputes what it
                                                   never signed (``disputes.py``)
    requester VoucherCap      --gossip anchors-->  sentries pay that lost attempt no more than
                                                   its seconds up to the checkpoint kept

No message needs trust: a voucher and a cap carry the requester's chain signatures, the
leaves are only used when they hash to the root the contract holds, and every entry carries
its Merkle proof to the entries root, which a requester compares with the contract's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

from consensus.errors import Invalid
from consensus.kinds import Body, Wei, exact_size
from consensus.market.messages import HASH_LEN, TaskRef
from consensus.settlement.eip712 import chain_job_id, chain_task_id
from consensus.settlement.epoch import Entry, Epoch, Spend
from consensus.settlement.merkle import verify

ADDRESS_LEN = 20
SIGNATURE_LEN = 65
MAX_LEAVES = 1000  # under the decoder's 1024-item arrays; ~50 bytes each, so under 64 KiB too
# One EpochEntries message: rows of at most MAX_PROOF_LEN hashes (a tree of 16M entries) take
# about 1.1 KiB each at worst, so 48 of them stay under gossip's 64 KiB envelope limit
# (tests/unit/settlement/test_disputes.py seals the worst case).
MAX_ENTRY_ROWS = 48
MAX_PROOF_LEN = 24
MAX_PARTS = 1 << 16


@dataclass(frozen=True, kw_only=True)
class SettledVoucher(Body):
    """A worker's latest requester-signed voucher for one task attempt, for anchoring, with
    the requester's ``Spend`` signed alongside it (``spend_wei`` in all, at least this voucher),
    which an anchor must carry to debit the requester's pool (v2: v1 had no spend)."""

    KIND: ClassVar[str] = "settlement.voucher/2"
    ref: TaskRef
    requester: bytes = field(metadata=exact_size(ADDRESS_LEN))
    worker: bytes = field(metadata=exact_size(ADDRESS_LEN))
    amount_wei: Wei
    signature: bytes = field(metadata=exact_size(SIGNATURE_LEN))
    spend_wei: Wei
    spend_sig: bytes = field(metadata=exact_size(SIGNATURE_LEN))

    def __post_init__(self) -> None:
        if self.spend_wei < self.amount_wei:
            raise Invalid("voucher.spend_wei", f"{self.spend_wei} is below the voucher's "
                          f"{self.amount_wei} wei")  # fmt: skip

    def entry(self) -> Entry:
        return entry_of(self.ref, self.requester, self.worker, self.amount_wei)

    def spend(self) -> Spend:
        return Spend(self.requester, int(self.spend_wei), self.spend_sig)


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
    # The requester's spend when it sent the cap: a capped line whose worker never handed in a
    # voucher is otherwise anchored only once some later voucher's spend covers it.
    spend_wei: Wei | None = None
    spend_sig: bytes | None = None

    def __post_init__(self) -> None:
        wanted = SIGNATURE_LEN if self.amount_wei > 0 else 0
        if len(self.voucher_sig) != wanted:
            raise Invalid("cap.voucher_sig", f"{wanted} bytes for {self.amount_wei} wei")
        if (self.spend_wei is None) != (self.spend_sig is None):
            raise Invalid("cap.spend", "spend_wei and spend_sig come together")
        if self.spend_sig is not None and len(self.spend_sig) != SIGNATURE_LEN:
            raise Invalid("cap.spend_sig", f"{SIGNATURE_LEN} bytes, got {len(self.spend_sig)}")

    def entry(self) -> Entry:
        return entry_of(self.ref, self.requester, self.worker, self.amount_wei)

    def spend(self) -> Spend | None:
        if self.spend_wei is None or self.spend_sig is None:
            return None
        return Spend(self.requester, int(self.spend_wei), self.spend_sig)


@dataclass(frozen=True, kw_only=True)
class EpochLeaves(Body):
    """Part ``part`` of ``parts`` of the earnings leaves of anchored epoch ``index``: (worker,
    cumulative net earnings), workers ascending within and across the parts.

    Cumulative earnings name every worker ever paid, so a network outgrows one message
    (MAX_LEAVES): a worker collects every part (:class:`consensus.settlement.leaves.
    LeavesAssembly`) and trusts them only once they hash to the root the contract holds.
    """

    KIND: ClassVar[str] = "settlement.leaves/1"
    index: int
    earnings_root: bytes = field(metadata=exact_size(HASH_LEN))
    part: int
    parts: int
    workers: list[bytes]
    amounts: list[Wei]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise Invalid("leaves.index", f"must not be negative, got {self.index}")
        if not 0 <= self.part < self.parts <= MAX_PARTS:
            raise Invalid("leaves.part", f"part {self.part} of {self.parts} (at most {MAX_PARTS})")
        if len(self.workers) != len(self.amounts):
            raise Invalid("leaves.amounts", "one amount per worker")
        if not self.workers or len(self.workers) > MAX_LEAVES:
            raise Invalid("leaves.workers", f"1 to {MAX_LEAVES} leaves")
        if any(len(w) != ADDRESS_LEN for w in self.workers):
            raise Invalid("leaves.workers", "20-byte addresses")
        if any(a >= b for a, b in pairwise(self.workers)):
            raise Invalid("leaves.workers", "must be strictly ascending")


@dataclass(frozen=True, kw_only=True)
class EntryRow:
    """One anchored entry of the message's requester, its proof, and the voucher the anchorer
    holds for it (what it would answer a dispute with; empty if it holds none)."""

    worker: bytes = field(metadata=exact_size(ADDRESS_LEN))
    job: bytes = field(metadata=exact_size(HASH_LEN))
    task: bytes = field(metadata=exact_size(HASH_LEN))
    amount_wei: Wei
    previous_wei: Wei  # the line's amount in the last final anchor
    signature: bytes
    proof: list[bytes]


@dataclass(frozen=True, kw_only=True)
class EpochEntries(Body):
    """Part ``part`` of ``parts`` of one requester's entries in anchored epoch ``index``.

    Every row must prove its way to ``entries_root`` (checked here, so a bad message is
    refused at the gossip validator); whether that root is the one on chain is the receiver's
    question. One message per MAX_ENTRY_ROWS entries, split per requester, so each requester
    reads only its own and each envelope stays under 64 KiB.
    """

    KIND: ClassVar[str] = "settlement.entries/2"
    index: int
    entries_root: bytes = field(metadata=exact_size(HASH_LEN))
    requester: bytes = field(metadata=exact_size(ADDRESS_LEN))
    part: int
    parts: int
    rows: list[EntryRow]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise Invalid("entries.index", f"must not be negative, got {self.index}")
        if not 0 <= self.part < self.parts <= MAX_PARTS:
            raise Invalid("entries.part", f"part {self.part} of {self.parts} (at most {MAX_PARTS})")
        if not 0 < len(self.rows) <= MAX_ENTRY_ROWS:
            raise Invalid("entries.rows", f"1 to {MAX_ENTRY_ROWS} rows, got {len(self.rows)}")
        for i, row in enumerate(self.rows):
            _check_row(i, row)
            if not verify(self.entries_root, self.entry(row).leaf(), row.proof):
                raise Invalid("entries.rows", f"row {i} does not prove to entries_root")

    def entry(self, row: EntryRow) -> Entry:
        amount, previous = int(row.amount_wei), int(row.previous_wei)
        return Entry(self.requester, row.worker, row.job, row.task, amount, previous)

    def entries(self) -> list[tuple[Entry, list[bytes], bytes]]:
        """(entry, proof, signature) per row."""
        return [(self.entry(r), r.proof, r.signature) for r in self.rows]


def _check_row(i: int, row: EntryRow) -> None:
    if row.amount_wei <= row.previous_wei:
        raise Invalid(f"entries.rows[{i}].amount_wei", "must be above previous_wei")
    if len(row.signature) not in (0, SIGNATURE_LEN):
        raise Invalid(f"entries.rows[{i}].signature", f"0 or {SIGNATURE_LEN} bytes")
    if len(row.proof) > MAX_PROOF_LEN or any(len(h) != HASH_LEN for h in row.proof):
        raise Invalid(f"entries.rows[{i}].proof", f"at most {MAX_PROOF_LEN} hashes of 32 bytes")


def entries_parts(
    epoch: Epoch, signatures: Mapping[bytes, bytes]
) -> list[tuple[bytes, int, int, list[EntryRow]]]:
    """An anchored epoch's entries as message contents: ``(requester, part, parts, rows)``,
    per requester in chunks of MAX_ENTRY_ROWS; ``signatures`` maps an entry leaf to the
    voucher the anchorer holds for it."""
    mine: dict[bytes, list[EntryRow]] = {}
    for e in epoch.entries:
        mine.setdefault(e.requester, []).append(EntryRow(
            worker=e.worker, job=e.job, task=e.task, amount_wei=Wei(e.amount),
            previous_wei=Wei(e.previous),
            signature=signatures.get(e.leaf(), b""), proof=epoch.entry_proof(e),
        ))  # fmt: skip
    out = []
    for requester, rows in sorted(mine.items()):
        chunks = [rows[i : i + MAX_ENTRY_ROWS] for i in range(0, len(rows), MAX_ENTRY_ROWS)]
        out += [(requester, i, len(chunks), chunk) for i, chunk in enumerate(chunks)]
    return out


def entry_of(ref: TaskRef, requester: bytes, worker: bytes, amount_wei: int) -> Entry:
    """The anchored entry for the chain voucher twin of a market voucher for ``ref``."""
    return Entry(
        requester=requester,
        worker=worker,
        job=chain_job_id(ref.job_id),
        task=chain_task_id(ref.task, ref.attempt),
        amount=amount_wei,
    )


SETTLEMENT_KINDS: tuple[type[Body], ...] = (SettledVoucher, VoucherCap, EpochLeaves, EpochEntries)
