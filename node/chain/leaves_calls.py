"""The calls on a pending anchor's trees shown in parts (``EpochLeaves.sol``): demand its
earnings leaves or its entries, show them in parts, read the leaves off the ``LeavesShown``
events, and void an anchor that leaves a worker out. (Entries shown are read with the sum
answers' entries: :meth:`node.chain.audit_calls.AuditCalls.sum_answers`.)

A mixin of :class:`node.chain.client.Settlement`, like :mod:`node.chain.audit_calls`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eth_abi.abi import encode
from eth_hash.auto import keccak
from web3 import Web3

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, MultiProof
from consensus.settlement.shown import Row, ShownEntries, ShownLeaves
from node.chain.epoch_calls import entry_args, entry_of

if TYPE_CHECKING:
    from node.chain.client import TxResult

R = TypeVar("R")
Owed = tuple[tuple[int, Sequence[bytes]], Sequence[Entry], MultiProof]  # base, entries, proof


class LeavesCalls:
    """Needs ``send``, ``contract``, ``events`` and ``_debit_lists`` from its host class."""

    contract: Any

    def send(self, op: str, args: list[Any], value: int = 0) -> TxResult:
        raise NotImplementedError

    def events(self, name: str, **where: Any) -> list[Any]:
        raise NotImplementedError

    def _debit_lists(self, index: int) -> list[list[Any]]:
        raise NotImplementedError

    def dispute_leaves(self, index: int) -> TxResult:
        """Demand every earnings leaf of anchor ``index`` from its anchorer."""
        return self.send("disputeLeaves", [index])

    def answer_leaves(self, index: int, shown: ShownLeaves, part: int) -> TxResult:
        """Show part ``part`` of anchor ``index``'s leaves; the last one answers the demand."""
        return self.send("answerLeaves", [index, list(shown.nodes), part, _part(shown.parts[part])])

    def dispute_entries(self, index: int) -> TxResult:
        """Demand every entry of anchor ``index`` from its anchorer."""
        return self.send("disputeEntries", [index])

    def answer_entries(self, index: int, shown: ShownEntries, part: int) -> TxResult:
        """Show part ``part`` of anchor ``index``'s entries; the last one answers the demand."""
        rows = [entry_args(e) for e in shown.parts[part]]
        return self.send("answerEntries", [index, list(shown.nodes), part, rows])

    def leaves_shown(self, index: int) -> ShownLeaves | None:
        """Anchor ``index``'s leaves as its anchorer showed them, every part under one set of
        nodes (the contract checked each against the root); None until all of one set are."""
        whole = self._whole("LeavesShown", index, _leaf_rows)
        return None if whole is None else ShownLeaves(*whole)

    def entries_shown(self, index: int) -> ShownEntries | None:
        """Anchor ``index``'s entries as its anchorer showed them, as :meth:`leaves_shown`."""
        whole = self._whole("EntriesPartShown", index, lambda a: tuple(map(entry_of, a["entries"])))
        return None if whole is None else ShownEntries(*whole)

    def _whole(
        self, event: str, index: int, rows_of: Callable[[Any], tuple[R, ...]]
    ) -> tuple[tuple[bytes, ...], tuple[tuple[R, ...], ...]] | None:
        """The nodes and parts of the first set of ``event`` parts of anchor ``index`` shown
        whole (each part's rows read off its event's arguments by ``rows_of``)."""
        sets: dict[tuple[bytes, ...], dict[int, tuple[R, ...]]] = {}
        for log in self.events(event, epoch=index):
            a = log["args"]
            nodes = tuple(bytes(n) for n in a["nodes"])
            parts = sets.setdefault(nodes, {})
            parts[int(a["part"])] = rows_of(a)
            if len(parts) == len(nodes):
                return nodes, tuple(parts[j] for j in range(len(nodes)))
        return None

    def leaves_with_root(self, root: bytes) -> tuple[int, ShownLeaves] | None:
        """The latest final anchor whose earnings root is ``root`` and whose leaves were shown
        on chain, with them; None if there is none."""
        for log in reversed(self.events("Finalized")):  # two epochs may share a root
            if bytes(log["args"]["earningsRoot"]) != root:
                continue
            index = int(log["args"]["epoch"])
            shown = self.leaves_shown(index)
            try:
                if shown is not None and shown.root() == root:
                    return index, shown
            except Invalid:  # the contract checked the parts: cannot happen, but not ours
                continue
        return None

    def base_shown(self, base: Mapping[bytes, int]) -> ShownLeaves | None:
        """The last final root's leaves as shown on chain when ``base`` (the earnings it
        holds) does not hash to it as the sorted tree: proofs of base leaves are then read off
        the parts as shown (the tree was followed from them, see
        :func:`consensus.settlement.following.rebuild`). None: the sorted tree is the root."""
        if not base:
            return None
        root = bytes(self.contract.functions.claimRoot().call())
        if MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(base.items())]).root == root:
            return None
        found = self.leaves_with_root(root)
        return None if found is None else found[1]

    def shown_parts(self, index: int, nodes: Sequence[bytes], event: str = "LeavesShown"
                    ) -> set[int]:  # fmt: skip
        """The parts of anchor ``index``'s leaves (or, with ``event`` "EntriesPartShown", its
        entries) under ``nodes`` shown so far."""
        want = [bytes(n) for n in nodes]
        return {int(log["args"]["part"]) for log in self.events(event, epoch=index)
                if [bytes(n) for n in log["args"]["nodes"]] == want}  # fmt: skip

    def show_absent(self, index: int, worker: bytes, leaves: ShownLeaves, part: int) -> TxResult:
        """Show that part ``part`` of anchor ``index``'s ``leaves`` does not name ``worker``."""
        args = [index, Web3.to_checksum_address(worker), list(leaves.nodes), part,
                _part(leaves.parts[part])]  # fmt: skip
        return self.send("showAbsent", args)

    def absent_parts(self, index: int, worker: bytes, nodes: Sequence[bytes]) -> set[int]:
        """The parts under ``nodes`` shown so far not to name ``worker``."""
        key = keccak(encode(["uint64", "address", "bytes32[]"], [index, worker, list(nodes)]))
        bits = int(self.contract.functions.partsWithout(key).call())
        return {j for j in range(len(nodes)) if bits >> j & 1}

    def void_missing_leaf(
        self, index: int, worker: bytes, owed: Owed, nodes: Sequence[bytes]
    ) -> TxResult:
        """Void anchor ``index`` for leaving ``worker`` out of its leaves (every part under
        ``nodes`` shown without it), though ``owed`` shows its base leaf and proof (``(0, [])``:
        none) and its entries (in the multiproof's order) pay it."""
        (base, base_proof), entries, proof = owed
        shown = [[entry_args(e) for e in entries], list(proof.proof), list(proof.flags)]
        args = [index, Web3.to_checksum_address(worker), [base, list(base_proof)], shown,
                list(nodes), *self._debit_lists(index)]  # fmt: skip
        return self.send("voidMissingLeaf", args)


def _leaf_rows(args: Any) -> tuple[Row, ...]:
    return tuple((bytes.fromhex(w[2:]), int(c))
                 for w, c in zip(args["workers"], args["cumulatives"], strict=True))  # fmt: skip


def _part(rows: Sequence[Row]) -> list[list[Any]]:
    return [[Web3.to_checksum_address(w) for w, _ in rows], [a for _, a in rows]]
