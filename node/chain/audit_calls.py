"""The audit calls on a pending anchor (``EpochAudits.sol``): sum disputes of a worker's
earnings leaf or a requester's debit, their answers and voids, and the voids of an anchor that
counts a line twice, debits a requester less than its entries add, or credits a worker less.
The leaves' own calls are in :mod:`node.chain.leaves_calls`.

A mixin of :class:`node.chain.client.Settlement`, like :mod:`node.chain.epoch_calls`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode
from eth_hash.auto import keccak
from web3 import Web3

from consensus.settlement.audits import DEBIT, EARNINGS, ENTRIES, LEAVES, PREVIOUS
from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import MultiProof
from consensus.settlement.shown import part_proof
from node.chain.epoch_calls import entry_args, entry_of

if TYPE_CHECKING:
    from node.chain.client import TxResult

SUM_KINDS = {EARNINGS: "earnings", DEBIT: "debit", LEAVES: "leaves", PREVIOUS: "previous",
             ENTRIES: "entries"}  # fmt: skip
ANSWERED = 2**64 - 1  # a sum dispute's ``answerBy`` once answered


def sum_key(index: int, kind: int, party: bytes, amount: int) -> bytes:
    """The contract's ``sumDisputes`` key: ``keccak256(abi.encode(epoch, kind, party, amount))``."""
    return keccak(encode(["uint64", "uint8", "address", "uint256"], [index, kind, party, amount]))


@dataclass(frozen=True)
class SumDispute:
    """An open sum dispute of the latest anchor, as its ``SumDisputed`` event said."""

    index: int
    kind: int  # EARNINGS | DEBIT | LEAVES | PREVIOUS | ENTRIES
    party: bytes  # 20-byte address: the worker or the requester (others: zero)
    amount: int  # the disputed leaf, or the requester's whole debit (LEAVES, ENTRIES: 0; PREVIOUS:
    # the disputed entry's leaf, as a number)
    answer_by: int  # chain seconds


class AuditCalls:
    """Needs ``send``, ``contract``, ``events`` and ``anchor_debits`` from its host class."""

    contract: Any

    def send(self, op: str, args: list[Any], value: int = 0) -> TxResult:
        raise NotImplementedError

    def anchor_debits(self, index: int) -> list[tuple[str, int]]:
        raise NotImplementedError

    def events(self, name: str, **where: Any) -> list[Any]:
        raise NotImplementedError

    def dispute_earnings(
        self, index: int, worker: bytes, cumulative: int, proof: Sequence[bytes]
    ) -> TxResult:
        args = [index, Web3.to_checksum_address(worker), cumulative, list(proof)]
        return self.send("disputeEarnings", args)

    def dispute_debit(self, index: int) -> TxResult:
        """Dispute what anchor ``index`` debits our pool (its debit list read from its post)."""
        return self.send("disputeDebit", [index, *self._debit_lists(index)])

    def dispute_previous(self, index: int, entry: Entry, proof: Sequence[bytes]) -> TxResult:
        """Say ``entry`` (with its proof) of anchor ``index`` names a ``previous`` above its
        line's amount in the last final anchor."""
        return self.send("disputePrevious", [index, entry_args(entry), list(proof)])

    def answer_previous(
        self, dispute: SumDispute, entry: Entry, other: tuple[int, Entry, Sequence[bytes]]
    ) -> TxResult:
        """Answer ``dispute`` of ``entry``'s ``previous`` with its line's entry ``other``
        (the final epoch holding it, itself, its proof there)."""
        at, o, proof = other
        args = [dispute.index, entry_args(entry), at, entry_args(o), list(proof)]
        return self.send("answerPrevious", args)

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
        """When the anchorer must answer ``dispute`` (0: never raised; ANSWERED: answered)."""
        key = sum_key(dispute.index, dispute.kind, dispute.party, dispute.amount)
        return int(self.contract.functions.sumDisputes(key).call()[0])

    def sum_disputes(self, index: int, answered: bool = False) -> list[SumDispute]:
        """The sum disputes of anchor ``index`` still open (raised and not answered); with
        ``answered``, every one raised."""
        logs = self.events("SumDisputed", epoch=index)
        out = []
        for log in logs:
            a = log["args"]
            d = SumDispute(index, int(a["kind"]), bytes.fromhex(a["party"][2:]), int(a["amount"]),
                           0)  # fmt: skip
            d = replace(d, answer_by=self.sum_answer_by(d))  # now: ANSWERED once answered
            if answered or d.answer_by not in (0, ANSWERED):
                out.append(d)
        return out

    def void_under_debit(
        self, index: int, requester: bytes, entries: Sequence[Entry], proof: MultiProof
    ) -> TxResult:
        """Void anchor ``index`` for debiting ``requester`` less than its entries among
        ``entries`` (in ``proof``'s order; others' may be among them) add."""
        shown = [[entry_args(e) for e in entries], list(proof.proof), list(proof.flags)]
        args = [index, Web3.to_checksum_address(requester), *self._debit_lists(index), shown]
        return self.send("voidUnderDebit", args)

    def void_low_leaf(
        self,
        index: int,
        leaf: tuple[bytes, int, Sequence[bytes]],
        base: tuple[int, Sequence[bytes]],
        entries: Sequence[Entry],
        proof: MultiProof,
    ) -> TxResult:
        """Void anchor ``index`` for crediting a worker less than it earned: ``leaf`` (worker,
        cumulative, proof) grew over ``base`` (its leaf in the last final root and that proof;
        ``(0, [])``: none shown) by less than its ``entries`` (in ``proof``'s order) add, net
        of the fee."""
        worker, cumulative, leaf_proof = leaf
        shown = [[entry_args(e) for e in entries], list(proof.proof), list(proof.flags)]
        args = [index, Web3.to_checksum_address(worker), cumulative, list(leaf_proof),
                [base[0], list(base[1])], shown, *self._debit_lists(index)]  # fmt: skip
        return self.send("voidLowLeaf", args)

    def sum_answers(self, index: int) -> list[tuple[int, bytes, list[Entry], MultiProof]]:
        """The entries shown for anchor ``index``'s sum disputes (what they reveal may never
        have been gossiped): kind, party, and the entries shown with a multiproof of them in
        its entries root. Read from the events, so an answer sent through a contract shows
        them too: each answer's ``EntriesShown``, and each part of the entries shown on demand
        (``EntriesPartShown``, kind ENTRIES, zero party; a part the contract took, whether or
        not every part is shown yet)."""
        out = []
        for log in self.events("EntriesShown", epoch=index):
            args = log["args"]
            shown = args["shown"]  # decoded as a mapping by name (or a tuple, by web3 version)
            rows, proof, flags = (shown[k] for k in ("entries", "proof", "flags")) if isinstance(
                shown, Mapping) else shown  # fmt: skip
            entries = [entry_of(r) for r in rows]
            multi = MultiProof(tuple(e.leaf() for e in entries), tuple(bytes(p) for p in proof),
                               tuple(bool(f) for f in flags))  # fmt: skip
            out.append((int(args["kind"]), bytes.fromhex(args["party"][2:]), entries, multi))
        for log in self.events("EntriesPartShown", epoch=index):
            args = log["args"]
            entries = [entry_of(r) for r in args["entries"]]
            nodes = tuple(bytes(n) for n in args["nodes"])
            multi = part_proof(nodes, int(args["part"]), [e.leaf() for e in entries])
            out.append((ENTRIES, bytes(20), entries, multi))
        return out

    def _debit_lists(self, index: int) -> list[list[Any]]:
        debits = self.anchor_debits(index)
        return [[r for r, _ in debits], [a for _, a in debits]]
