"""EIP-712 typed-data digests that the settlement contract recovers signatures over.

The domain is ``("idlegrid", "1", chain id, contract address)``, so a voucher signed for one
chain or one deployment is worthless on another. Amounts are integer wei; never floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi.abi import encode
from eth_hash.auto import keccak

from consensus.errors import Invalid

DOMAIN_NAME = "idlegrid"
DOMAIN_VERSION = "1"
DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH = keccak(b"Voucher(bytes32 job,bytes32 task,address worker,uint256 cumulative)")
SLASH_TYPEHASH = keccak(b"Slash(address worker,uint256 amount,bytes32 evidence)")
# The requester's cap on all its epoch debits ever: anchors may take at most ``cumulative``
# from its pool in total (the contract checks it; no dispute needed for a debit beyond it).
SPEND_TYPEHASH = keccak(b"Spend(address requester,uint256 cumulative)")
# Off-chain only (anchorers check it, the contract never sees it): its own type, so no voucher
# signature can pass for a cap, and no cap for a voucher.
CAP_TYPEHASH = keccak(b"VoucherCap(bytes32 job,bytes32 task,address worker,uint256 cumulative)")
UINT256_MAX = 2**256 - 1
BPS = 10_000


@dataclass(frozen=True)
class Domain:
    """Which chain and which deployment a signature is good for."""

    chain_id: int
    contract: bytes  # 20-byte address

    def __post_init__(self) -> None:
        if len(self.contract) != 20:
            raise Invalid("domain.contract", f"must be 20 bytes, got {len(self.contract)}")
        if not 0 < self.chain_id <= UINT256_MAX:
            raise Invalid("domain.chain_id", f"must be a positive uint256, got {self.chain_id}")

    def separator(self) -> bytes:
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    DOMAIN_TYPEHASH,
                    keccak(DOMAIN_NAME.encode()),
                    keccak(DOMAIN_VERSION.encode()),
                    self.chain_id,
                    self.contract,
                ],
            )
        )


@dataclass(frozen=True)
class ChainVoucher:
    """The requester's promise: ``cumulative`` wei in all for (job, task, worker) so far."""

    job: bytes  # bytes32
    task: bytes  # bytes32
    worker: bytes  # 20-byte address
    cumulative: int

    def __post_init__(self) -> None:
        for name, value, size in (("job", self.job, 32), ("task", self.task, 32)):
            if len(value) != size:
                raise Invalid(f"voucher.{name}", f"must be {size} bytes, got {len(value)}")
        if len(self.worker) != 20:
            raise Invalid("voucher.worker", f"must be 20 bytes, got {len(self.worker)}")
        if not isinstance(self.cumulative, int) or not 0 < self.cumulative <= UINT256_MAX:
            raise Invalid(
                "voucher.cumulative", f"must be a positive uint256 in wei, got {self.cumulative!r}"
            )

    def struct_hash(self) -> bytes:
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "address", "uint256"],
                [VOUCHER_TYPEHASH, self.job, self.task, self.worker, self.cumulative],
            )
        )


def typed_digest(domain: Domain, struct_hash: bytes) -> bytes:
    """``keccak256("\\x19\\x01" || domainSeparator || structHash)``: what gets signed."""
    return keccak(b"\x19\x01" + domain.separator() + struct_hash)


def voucher_digest(domain: Domain, voucher: ChainVoucher) -> bytes:
    return typed_digest(domain, voucher.struct_hash())


def slash_digest(domain: Domain, worker: bytes, amount: int, evidence: bytes) -> bytes:
    """The digest each sentry signs to slash ``worker`` by ``amount`` on ``evidence``."""
    if len(worker) != 20 or len(evidence) != 32:
        raise Invalid("slash", "worker must be 20 bytes and evidence 32 bytes")
    if not 0 < amount <= UINT256_MAX:
        raise Invalid("slash.amount", f"must be a positive uint256 in wei, got {amount}")
    return typed_digest(
        domain,
        keccak(
            encode(
                ["bytes32", "address", "uint256", "bytes32"],
                [SLASH_TYPEHASH, worker, amount, evidence],
            )
        ),
    )


def spend_digest(domain: Domain, requester: bytes, cumulative: int) -> bytes:
    """What a requester signs to let anchors debit its pool ``cumulative`` in all, ever."""
    if len(requester) != 20:
        raise Invalid("spend.requester", f"must be 20 bytes, got {len(requester)}")
    if not isinstance(cumulative, int) or not 0 <= cumulative <= UINT256_MAX:
        raise Invalid("spend.cumulative", f"must be a uint256 in wei, got {cumulative!r}")
    struct = encode(["bytes32", "address", "uint256"], [SPEND_TYPEHASH, requester, cumulative])
    return typed_digest(domain, keccak(struct))


def cap_digest(domain: Domain, job: bytes, task: bytes, worker: bytes, amount: int) -> bytes:
    """What a requester signs to close a line at ``amount`` wei (0 allowed: nothing is owed)."""
    if len(job) != 32 or len(task) != 32 or len(worker) != 20:
        raise Invalid("cap", "job and task must be 32 bytes, worker 20")
    if not 0 <= amount <= UINT256_MAX:
        raise Invalid("cap.amount", f"must be a uint256 in wei, got {amount}")
    return typed_digest(
        domain,
        keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "address", "uint256"],
                [CAP_TYPEHASH, job, task, worker, amount],
            )
        ),
    )


def chain_job_id(job_id: bytes) -> bytes:
    """The market's 16-byte job id as the contract's bytes32 (left-aligned, zero padded)."""
    if len(job_id) > 32:
        raise Invalid("job_id", f"at most 32 bytes, got {len(job_id)}")
    return job_id.ljust(32, b"\0")


def chain_task_id(task: int, attempt: int) -> bytes:
    """One attempt at one task as the contract's bytes32: ``task << 32 | attempt``."""
    if not (0 <= task < 2**64 and 0 <= attempt < 2**32):
        raise Invalid("task", f"task must fit 64 bits and attempt 32 bits, got {task}#{attempt}")
    return ((task << 32) | attempt).to_bytes(32, "big")


def split_fee(delta_wei: int, fee_bps: int) -> tuple[int, int]:
    """``(paid to the worker, protocol fee)`` for a claim of ``delta_wei``, as the contract does."""
    if delta_wei < 0 or not 0 <= fee_bps <= BPS:
        raise Invalid("fee", f"delta {delta_wei} and fee_bps {fee_bps} out of range")
    fee = delta_wei * fee_bps // BPS
    return delta_wei - fee, fee
