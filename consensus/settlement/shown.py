"""A pending anchor's trees shown whole, in parts (``EpochLeaves.sol``), pure.

A pending anchor's earnings leaves, or its entries, are demanded on chain when they were not
gossiped, and a worker left out of the leaves is shown with every leaf. Either may be more
than one transaction holds, so a tree goes in parts: its nodes at one depth (2**d of them, the
root alone at d = 0), and under each node its leaves in the order of a multiproof of all of
them (no proof hashes, every flag true), which only the whole set under the node passes.

    the anchorer   ShownLeaves.of_rows(epoch.earnings.items())  ->  nodes, parts to send
                   ShownEntries.of_rows(epoch.entries)
    a watcher      ShownLeaves(nodes, parts) read off the events  ->  amounts, proof(w, a)
                   ShownEntries(nodes, parts)                     ->  part_proofs()

A shown tree need not be the canonical one (hash-sorted, each row once): it is whatever the
anchorer posted, so proofs are read off the parts as shown, never rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, Self, TypeVar

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import (
    EARNINGS_TYPES,
    ENTRY_TYPES,
    MerkleTree,
    MultiProof,
    hash_pair,
    leaf_hash,
)

PART_LEAVES = 1000  # leaves per part: about 3.1M gas and 64 KB of call data
PART_ENTRIES = 250  # entries per part: 6 words each, so about 60 KB of call data
MAX_PARTS = 256  # the contract's: one bit each

Row = tuple[bytes, int]  # (worker, cumulative)
R = TypeVar("R")


@dataclass(frozen=True)
class ShownTree(Generic[R]):
    """Every leaf of a tree: ``parts[j]`` (rows) hash to ``nodes[j]`` as a multiproof of all
    of them, and ``nodes`` pairwise to the root. A subclass says what a row is."""

    nodes: tuple[bytes, ...]
    parts: tuple[tuple[R, ...], ...]

    TYPES: ClassVar[tuple[str, ...]]
    PER_PART: ClassVar[int]

    @staticmethod
    def values(row: R) -> list[object]:
        raise NotImplementedError

    @classmethod
    def leaf(cls, row: R) -> bytes:
        return leaf_hash(cls.TYPES, cls.values(row))

    @classmethod
    def of_rows(cls, rows: Iterable[R], per_part: int | None = None) -> Self:
        """The canonical tree over ``rows`` (as an honest anchorer builds it) in parts of at
        most ``per_part`` leaves where the tree allows (at most one part per leaf, MAX_PARTS)."""
        by_leaf = {cls.leaf(row): row for row in rows}
        tree = MerkleTree.of(cls.TYPES, [cls.values(row) for row in by_leaf.values()])
        return cls.of_tree(tree, by_leaf, per_part)

    @classmethod
    def of_tree(cls, tree: MerkleTree, by_leaf: Mapping[bytes, R], per_part: int | None = None
                ) -> Self:  # fmt: skip
        """``tree`` (OpenZeppelin's array layout, in any leaf order; ``by_leaf``: each leaf's
        row) in parts, as :meth:`of_rows`."""
        per_part = per_part or cls.PER_PART
        n, depth = (len(tree.nodes) + 1) // 2, 0
        while _largest_part(n, depth) > per_part and 2 ** (depth + 1) <= min(n, MAX_PARTS):
            depth += 1
        first = 2**depth - 1  # the array index of the first node at that depth
        nodes = tuple(tree.nodes[first + j] for j in range(2**depth))
        under = [_leaves_under(first + j, n) for j in range(2**depth)]
        parts = tuple(tuple(by_leaf[tree.nodes[i]] for i in part) for part in under)
        return cls(nodes, parts)

    def root(self) -> bytes:
        """The root the nodes hash to.

        Raises:
            Invalid: not 2**d nodes, or a part that does not hash to its node.
        """
        k = len(self.nodes)
        if k == 0 or k & (k - 1) or k > MAX_PARTS or len(self.parts) != k:
            raise Invalid("leaves.nodes", f"{k} nodes for {len(self.parts)} parts")
        for j, part in enumerate(self.parts):
            if not part or self._part_proof(part).root() != self.nodes[j]:
                raise Invalid("leaves.parts", f"part {j} does not hash to its node")
        return _levels(self.nodes)[-1][0]

    def tree(self) -> MerkleTree | None:
        """The whole tree in OpenZeppelin's array layout, for multiproofs of many leaves (a
        payout), when the parts fill it as that layout places leaves under the nodes (as
        :meth:`of_tree` splits one); None when they do not (another shape, also valid for
        single proofs, see :meth:`proof`).

        Raises:
            Invalid: not 2**d nodes, or a part that does not hash to its node.
        """
        root, k = self.root(), len(self.nodes)
        n, first = sum(len(p) for p in self.parts), k - 1
        nodes = [b""] * (2 * n - 1)
        for j, part in enumerate(self.parts):
            at = _leaves_under(first + j, n)
            if len(at) != len(part):
                return None
            for i, row in zip(at, part, strict=True):
                nodes[i] = self.leaf(row)
        for i in range(n - 2, -1, -1):
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
        if nodes[0] != root:
            return None
        return MerkleTree(tuple(nodes), {nodes[i]: i for i in range(n - 1, 2 * n - 1)})

    def rows(self) -> list[R]:
        return [row for part in self.parts for row in part]

    def proof_of(self, row: R) -> list[bytes]:
        """The proof of ``row``'s leaf for ``MerkleProof.verify``.

        Raises:
            Invalid: no such row shown.
        """
        for j, part in enumerate(self.parts):
            if row in part:
                leaves = [self.leaf(r) for r in part]
                return part_proof(self.nodes, j, leaves).single_proofs()[self.leaf(row)]
        raise Invalid("shown.proof", f"no leaf 0x{self.leaf(row).hex()} shown")

    def part_proofs(self) -> list[tuple[tuple[R, ...], MultiProof]]:
        """Each part with a multiproof of its rows in the whole tree (:func:`part_proof`)."""
        return [(part, part_proof(self.nodes, j, [self.leaf(row) for row in part]))
                for j, part in enumerate(self.parts)]  # fmt: skip

    @classmethod
    def _part_proof(cls, part: tuple[R, ...]) -> MultiProof:
        leaves = tuple(cls.leaf(row) for row in part)
        return MultiProof(leaves, (), (True,) * (len(leaves) - 1))


class ShownLeaves(ShownTree[Row]):
    """An earnings tree shown: rows are (worker, cumulative)."""

    TYPES = EARNINGS_TYPES
    PER_PART = PART_LEAVES

    @staticmethod
    def values(row: Row) -> list[object]:
        return list(row)

    def amounts(self) -> dict[bytes, int]:
        """Each worker's leaf: the largest, where a tree holds two (the one a claim takes)."""
        out: dict[bytes, int] = {}
        for w, a in self.rows():
            out[w] = max(a, out.get(w, 0))
        return out

    def proof(self, worker: bytes, amount: int) -> list[bytes]:
        """The proof of leaf (``worker``, ``amount``) for ``MerkleProof.verify``.

        Raises:
            Invalid: no such leaf.
        """
        return self.proof_of((worker, amount))


class ShownEntries(ShownTree[Entry]):
    """An entries tree shown (demanded with ``disputeEntries``): rows are entries."""

    TYPES = ENTRY_TYPES
    PER_PART = PART_ENTRIES

    @staticmethod
    def values(row: Entry) -> list[object]:
        return row.row()


def part_proof(nodes: tuple[bytes, ...], j: int, leaves: list[bytes]) -> MultiProof:
    """A multiproof of ``leaves``, every leaf under ``nodes[j]`` in a multiproof's order, in
    the tree the ``nodes`` hash up to: the part's own steps (every flag true), then one step
    with a sibling for each level of nodes above it."""
    above = _above(nodes, j)
    steps = (True,) * (len(leaves) - 1) + (False,) * len(above)
    return MultiProof(tuple(leaves), tuple(above), steps)


def _above(nodes: tuple[bytes, ...], j: int) -> list[bytes]:
    """The siblings of ``nodes[j]``'s way up to the root."""
    path = []
    for level in _levels(nodes)[:-1]:
        path.append(level[j ^ 1])
        j //= 2
    return path


def _levels(nodes: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
    """``nodes``, then each level above, up to the root alone."""
    levels = [nodes]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(tuple(hash_pair(below[i], below[i + 1]) for i in range(0, len(below), 2)))
    return levels


def _leaves_under(node: int, n: int) -> list[int]:
    """The array indices of the leaves under ``node`` in a tree of ``n`` leaves (leaves are
    indices n-1 to 2n-2), deepest first: the order a multiproof of all of them takes."""
    found, level = [], [node]
    while level:
        found += [i for i in level if i >= n - 1]
        level = [c for i in level if i < n - 1 for c in (2 * i + 1, 2 * i + 2)]
    return sorted(found, reverse=True)


def _largest_part(n: int, depth: int) -> int:
    first = 2**depth - 1
    return max(len(_leaves_under(first + j, n)) for j in range(2**depth))
