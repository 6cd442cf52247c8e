"""The audit calls on a pending anchor (``EpochAudits.sol``): sum disputes of a worker's
earnings leaf or a requester's debit, their answers and voids, and the void of an anchor that
counts a line twice.

A mixin of :class:`node.chain.client.Settlement`, like :mod:`node.chain.epoch_calls`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from web3 import Web3

from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import MultiProof
from node.chain.epoch_calls import entry_args

if TYPE_CHECKING:
    from node.chain.client import TxResult

EARNINGS, DEBIT = 1, 2  # the contract's ``Sum`` kinds
SUM_KINDS = {EARNINGS: "earnings", DEBIT: "debit"}


@dataclass(frozen=True)
class SumDispute:
    """An open sum dispute of the latest anchor, as its ``SumDisputed`` event said."""

    index: int
    kind: int  # EARNINGS | DEBIT
    party: bytes  # 20-byte address: the worker or the requester
    amount: int  # the disputed leaf, or the requester's whole debit
    answer_by: int  # chain seconds


class AuditCalls:
    """Needs ``send``, ``contract`` and ``anchor_debits`` from its host class."""

    contract: Any

    def send(self, op: str, args: list[Any], value: int = 0) -> TxResult:
        raise NotImplementedError

    def anchor_debits(self, index: int) -> list[tuple[str, int]]:
        raise NotImplementedError

    def dispute_earnings(
        self, index: int, worker: bytes, cumulative: int, proof: Sequence[bytes]
    ) -> TxResult:
        args = [index, Web3.to_checksum_address(worker), cumulative, list(proof)]
        return self.send("disputeEarnings", args)

    def dispute_debit(self, index: int) -> TxResult:
        """Dispute what anchor ``index`` debits our pool (its debit list read from its post)."""
        return self.send("disputeDebit", [index, *self._debit_lists(index)])

    def answer_sum(
        self,
        dispute: SumDispute,
        base: tuple[int, Sequence[bytes]],
        entries: Sequence[Entry],
        proof: MultiProof,
    ) -> TxResult:
        """Answer ``dispute`` with ``entries`` (in ``proof``'s order) and, for earnings, the
        worker's leaf in the last final root with its proof (``(0, [])``: it had none)."""
        shown = [[entry_args(e) for e in entries], list(proof.proof), list(proof.flags)]
        args = [dispute.index, dispute.kind, Web3.to_checksum_address(dispute.party),
                dispute.amount, [base[0], list(base[1])], shown]  # fmt: skip
        return self.send("answerSum", args)

    def void_sum(self, dispute: SumDispute) -> TxResult:
        party = Web3.to_checksum_address(dispute.party)
        args = [dispute.index, dispute.kind, party, dispute.amount]
        return self.send("voidSum", [*args, *self._debit_lists(dispute.index)])

    def void_conflict(
        self,
        index: int,
        entry: tuple[Entry, Sequence[bytes]],
        other: tuple[int, Entry, Sequence[bytes]],
    ) -> TxResult:
        """Void anchor ``index`` for ``entry`` (with its proof) counting what entry ``other``
        (its epoch, itself, its proof) counted already."""
        (e, proof), (at, o, other_proof) = entry, other
        args = [index, entry_args(e), list(proof), at, entry_args(o), list(other_proof)]
        return self.send("voidConflict", [*args, *self._debit_lists(index)])

    def sum_answer_by(self, dispute: SumDispute) -> int:
        """When the anchorer must answer ``dispute`` (0: answered, or never raised)."""
        party = Web3.to_checksum_address(dispute.party)
        key = self.contract.functions.sumKey(
            dispute.index, dispute.kind, party, dispute.amount
        ).call()
        return int(self.contract.functions.sumDisputes(key).call()[0])

    def sum_disputes(self, index: int) -> list[SumDispute]:
        """The sum disputes of anchor ``index`` still open (raised and not answered)."""
        logs = self.contract.events.SumDisputed().get_logs(
            from_block=0, argument_filters={"epoch": index}
        )
        out = []
        for log in logs:
            a = log["args"]
            d = SumDispute(index, int(a["kind"]), bytes.fromhex(a["party"][2:]), int(a["amount"]),
                           int(a["answerBy"]))  # fmt: skip
            if self.sum_answer_by(d):
                out.append(d)
        return out

    def final_entries_root(self, index: int) -> bytes:
        """Anchor ``index``'s entries root if it became final, else 32 zero bytes."""
        return bytes(self.contract.functions.finalEntries(index).call())

    def _debit_lists(self, index: int) -> list[list[Any]]:
        debits = self.anchor_debits(index)
        return [[r for r, _ in debits], [a for _, a in debits]]
