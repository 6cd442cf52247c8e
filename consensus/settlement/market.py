"""Where the market meets the chain: one market voucher line as the contract's voucher.

The market pays per task attempt with cumulative vouchers (``consensus.market.messages.Voucher``,
``amount_wei`` for a :class:`TaskRef`); the contract keeps one cumulative line per (job, task
attempt, worker). So every market voucher has exactly one EIP-712 twin with the same amount.
"""

from __future__ import annotations

from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import ChainVoucher, chain_job_id, chain_task_id


def chain_voucher_for(ref: TaskRef, worker_address: bytes, amount_wei: int) -> ChainVoucher:
    """The contract voucher paying ``worker_address`` ``amount_wei`` in all for ``ref``."""
    return ChainVoucher(
        job=chain_job_id(ref.job_id),
        task=chain_task_id(ref.task, ref.attempt),
        worker=worker_address,
        cumulative=amount_wei,
    )
