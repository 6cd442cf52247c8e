"""The market's messages: demands and awards on gossip, bids, orders and vouchers direct.

Flow of one task (``attempt`` counts re-auctions of the same task after a failover)::

    requester                                   workers
    Demand     --gossip jobs/<gpu-class>-->     each bidder decides (bid or a reason not to)
               <--direct market/bid--           Bid (signed: the price is a commitment)
    TaskOrder  --direct market/confirm-->       the winner re-checks capacity, accepts/declines
    Award      --gossip awards-->               losers release their reservations
    Voucher    --direct control/meter-->        every few seconds while the task runs;
               <--TaskReport--                  progress, checkpoints, logs, result

Signed commitments (Demand, Bid, TaskOrder, Award, Voucher) are envelopes; a TaskReport is a
plain typed map over an authenticated stream, since it commits the worker to nothing that
the attestation (proof-of-compute) does not later sign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from consensus.errors import Invalid
from consensus.kinds import Body, Registry, Wei, exact_size, omit_empty
from consensus.market.spec import DATASET_NAME, MAX_DATASETS, Requirements

JOB_ID_LEN = 16
HASH_LEN = 32
MAX_DATA_HOLDERS = 4  # workers an order names as serving its datasets besides the requester
ANY_CLASS = "any"  # the shard of demands that accept any GPU class
DATASET_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class TaskRef:
    """One attempt at one task of one job: the key of every market record."""

    job_id: bytes = field(metadata=exact_size(JOB_ID_LEN))
    task: int
    attempt: int

    def __post_init__(self) -> None:
        if self.task < 0 or self.attempt < 0:
            raise ValueError("task and attempt must not be negative")

    def text(self) -> str:
        return f"{self.job_id.hex()}/{self.task}#{self.attempt}"


@dataclass(frozen=True, kw_only=True)
class Demand(Body):
    """A task looking for a worker; gossiped on ``jobs/<gpu_class or any>``.

    Attributes:
        max_price_wei_per_s: the most the requester pays per GPU-second.
        budget_wei: this task's share of the job's budget cap.
        estimate_s: expected seconds on a reference worker (benchmark score 1000).
        bid_until_ms: bids arriving later are ignored.
        reply_to: the requester's dialable addresses, for direct bids.
        datasets: the datasets the task names, by hex id, and the bytes of each: a worker
            bids only if they fit on its disk (one already held takes less).
        inputs_bytes: the size of the task's inputs (packed).
        settles: the requester settles on chain (escrow, vouchers a contract pays); a
            worker that settles takes only such tasks, unless told otherwise.
    """

    KIND: ClassVar[str] = "market.demand/1"
    ref: TaskRef
    kind: str
    requirements: Requirements
    max_price_wei_per_s: Wei
    budget_wei: Wei
    estimate_s: int
    deadline_ms: int
    bid_until_ms: int
    verification: str
    network: bool = False
    reply_to: list[str] = field(default_factory=list)
    datasets: dict[str, int] = field(default_factory=dict)
    inputs_bytes: int = 0
    settles: bool = field(default=False, metadata=omit_empty())

    def __post_init__(self) -> None:
        if len(self.datasets) > MAX_DATASETS:
            raise Invalid("demand.datasets", f"at most {MAX_DATASETS}")
        for hex_id, size in self.datasets.items():
            if not DATASET_HEX.fullmatch(hex_id) or size < 0:
                raise Invalid(f"demand.datasets.{hex_id[:16]}", "a 64-hex id and a size >= 0")
        if self.inputs_bytes < 0:
            raise Invalid("demand.inputs_bytes", "must not be negative")

    def data_bytes(self) -> int:
        """The bytes of everything the task brings: its inputs and its datasets."""
        return self.inputs_bytes + sum(self.datasets.values())


@dataclass(frozen=True, kw_only=True)
class Bid(Body):
    """A worker's offer for one demand, at its own price per GPU-second."""

    KIND: ClassVar[str] = "market.bid/1"
    ref: TaskRef
    price_wei_per_s: Wei
    gpus: int
    gpu_class: str
    est_seconds: int
    score: int = 0
    region: str = ""
    listen: list[str] = field(default_factory=list)  # where the requester reaches us later
    chain_address: str = ""  # where the worker is paid on chain ("" when it does not settle)
    # the wallet's signature binding chain_address to the bidder's peer id
    # (node.identity.wallet_binding): a requester that asks for stake checks whose stake it is
    binding_sig: bytes = field(default=b"", metadata=omit_empty())

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.est_seconds < 1:
            raise ValueError("gpus and est_seconds must be at least 1")
        if len(self.binding_sig) not in (0, 65):
            raise ValueError("binding_sig must be a 65-byte signature or empty")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What the winner runs: the job spec's runtime, narrowed to this task."""

    kind: str
    entry: str = ""
    command: list[str] = field(default_factory=list)
    segments: int = 1
    steps: int = 0
    frames: str = ""
    shard: int = 0
    shards: int = 1
    seed: int = 0
    params: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    network: bool = False
    datasets: dict[str, bytes] = field(default_factory=dict)  # its folder's name -> dataset id

    def __post_init__(self) -> None:
        if len(self.datasets) > MAX_DATASETS:
            raise Invalid("workload.datasets", f"at most {MAX_DATASETS}")
        for name, dataset_id in self.datasets.items():
            if not DATASET_NAME.fullmatch(name) or len(dataset_id) != HASH_LEN:
                raise Invalid(f"workload.datasets.{name}", "a plain name and a 32-byte id")


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    """Content-addressed data held by ``holders`` (peer ids), fetched and checked by hash."""

    hash: bytes = field(metadata=exact_size(HASH_LEN))
    size: int
    holders: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A finished segment: the state hash after it and the work seconds it took in all."""

    index: int
    hash: bytes = field(metadata=exact_size(HASH_LEN))
    chained: bytes = field(metadata=exact_size(HASH_LEN))
    seconds: int
    blob: BlobRef | None = None


@dataclass(frozen=True, kw_only=True)
class TaskOrder(Body):
    """The award, sent to the winner for confirmation; everything needed to run the task."""

    KIND: ClassVar[str] = "market.order/1"
    ref: TaskRef
    worker: str
    price_wei_per_s: Wei
    gpus: int
    budget_wei: Wei
    deadline_ms: int
    workload: Workload
    inputs: BlobRef | None = None
    resume: Checkpoint | None = None
    voucher_interval_ms: int = 2000
    voucher_grace_ms: int = 10_000
    requester_address: str = ""  # the chain account signing vouchers ("": no chain settlement)
    verification: str = "standard"  # the job's level; "none": the worker need not attest
    data_holders: list[str] = field(default_factory=list)  # serve its datasets too (peer ids)

    def __post_init__(self) -> None:
        if len(self.data_holders) > MAX_DATA_HOLDERS:
            raise Invalid("order.data_holders", f"at most {MAX_DATA_HOLDERS}")


@dataclass(frozen=True, kw_only=True)
class Award(Body):
    """Public record that ``worker`` won the task; other bidders release their reservations."""

    KIND: ClassVar[str] = "market.award/1"
    ref: TaskRef
    worker: str
    price_wei_per_s: Wei


@dataclass(frozen=True, kw_only=True)
class Voucher(Body):
    """The requester's signed promise: ``amount_wei`` in all for this attempt so far.

    Cumulative, so only the latest one counts and a lost voucher costs nothing.
    """

    KIND: ClassVar[str] = "market.voucher/1"
    ref: TaskRef
    worker: str
    amount_wei: Wei
    seconds: int
    chain_sig: bytes | None = None  # the requester's EIP-712 twin of this voucher (65 bytes)
    # with it, the requester's EIP-712 Spend: epoch anchors may debit its pool this much in all
    spend_wei: Wei | None = None
    spend_sig: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class TaskReport:
    """The worker's answer to each voucher: where the task stands.

    Attributes:
        state: running | done | failed | lost (the worker does not know the task, e.g. after
            its own restart) | stopped (it stopped: vouchers ceased, or cancelled).
        checkpoints: the finished segments newer than ``since`` in the request.
        log: log lines after the offset the requester asked for.
    """

    ref: TaskRef
    state: str
    segments: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    log_offset: int = 0
    result: BlobRef | None = None
    result_hash: bytes | None = field(default=None, metadata=exact_size(HASH_LEN))
    error: str = ""


MARKET_KINDS: tuple[type[Body], ...] = (Demand, Bid, TaskOrder, Award, Voucher)


def market_registry() -> Registry:
    return Registry(MARKET_KINDS)
