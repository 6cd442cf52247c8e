"""An anchor's earnings leaves shown whole, in parts (``EpochLeaves.sol``), pure.

A pending anchor's leaves are demanded on chain when they were not gossiped, and a worker left
out of them is shown with every leaf. Either may be more than one transaction holds, so the
leaves go in parts: the tree's nodes at one depth (2**d of them, the root alone at d = 0), and
under each node its leaves in the order of a multiproof of all of them (no proof hashes, every
flag true), which only the whole set under the node passes.

    the anchorer   ShownLeaves.of_rows(epoch.earnings.items())  ->  nodes, parts to send
    a watcher      ShownLeaves(nodes, parts) read off the events  ->  amounts, proof(w, a)

A shown tree need not be the canonical one (hash-sorted, each worker once): it is whatever
the anchorer posted, so proofs are read off the parts as shown, never rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.errors import Invalid
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, MultiProof, hash_pair, leaf_hash

PART_LEAVES = 1000  # leaves per part: about 3.1M gas and 64 KB of call data
MAX_PARTS = 256  # the contract's: one bit each

Row = tuple[bytes, int]  # (worker, cumulative)


@dataclass(frozen=True)
class ShownLeaves:
    """Every leaf of an earnings tree: ``parts[j]`` hash to ``nodes[j]`` as a multiproof of
    all of them, and ``nodes`` pairwise to the root."""

    nodes: tuple[bytes, ...]
    parts: tuple[tuple[Row, ...], ...]

    @classmethod
    def of_rows(cls, rows: Iterable[Row], per_part: int = PART_LEAVES) -> ShownLeaves:
        """The canonical tree over ``rows`` (as an honest anchorer builds it) in parts of at
        most ``per_part`` leaves where the tree allows (at most one part per leaf, MAX_PARTS)."""
        by_leaf = {leaf_hash(EARNINGS_TYPES, [w, a]): (w, a) for w, a in rows}
        tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in by_leaf.values()])
        return cls.of_tree(tree, by_leaf, per_part)

    @classmethod
    def of_tree(cls, tree: MerkleTree, by_leaf: Mapping[bytes, Row], per_part: int = PART_LEAVES
                ) -> ShownLeaves:  # fmt: skip
        """``tree`` (OpenZeppelin's array layout, in any leaf order; ``by_leaf``: each leaf's
        row) in parts, as :meth:`of_rows`."""
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
            if not part or _part_proof(part).root() != self.nodes[j]:
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
            for i, (w, a) in zip(at, part, strict=True):
                nodes[i] = leaf_hash(EARNINGS_TYPES, [w, a])
        for i in range(n - 2, -1, -1):
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
        if nodes[0] != root:
            return None
        return MerkleTree(tuple(nodes), {nodes[i]: i for i in range(n - 1, 2 * n - 1)})

    def rows(self) -> list[Row]:
        return [row for part in self.parts for row in part]

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
        leaf = leaf_hash(EARNINGS_TYPES, [worker, amount])
        for j, part in enumerate(self.parts):
            if (worker, amount) in part:
                path = _part_proof(part).single_proofs()[leaf]
                at = j
                for level in _levels(self.nodes)[:-1]:  # then up through the nodes
                    path.append(level[at ^ 1])
                    at //= 2
                return path
        raise Invalid("leaves.proof", f"no leaf 0x{worker.hex()} {amount} shown")


def _part_proof(part: tuple[Row, ...]) -> MultiProof:
    leaves = tuple(leaf_hash(EARNINGS_TYPES, [w, a]) for w, a in part)
    return MultiProof(leaves, (), (True,) * (len(leaves) - 1))


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
