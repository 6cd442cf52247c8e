"""OpenZeppelin-compatible keccak Merkle trees (``StandardMerkleTree``), for epoch anchors.

Leaves are ``keccak256(keccak256(abi.encode(values)))`` (double-hashed, so a leaf can never be
mistaken for an inner node), pairs are hashed sorted, the leaves are sorted by hash and laid out
as ``@openzeppelin/merkle-tree`` does, so roots and proofs match its output byte for byte
(checked against vectors it produced) and verify with ``MerkleProof`` on chain.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_hash.auto import keccak

from consensus.errors import Invalid

EARNINGS_TYPES = ("address", "uint256")  # (worker, cumulative earnings)
ENTRY_TYPES = (
    "address",
    "address",
    "bytes32",
    "bytes32",
    "uint256",
    "uint256",
)  # requester, worker, job, task, amount, previous


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    return keccak(keccak(encode(list(types), list(values))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a < b else b + a)


@dataclass(frozen=True)
class MerkleTree:
    """A built tree: ``nodes`` in OpenZeppelin's array layout, ``index`` from leaf to node."""

    nodes: tuple[bytes, ...]
    index: dict[bytes, int]

    @classmethod
    def of(cls, types: Sequence[str], values: Sequence[Sequence[Any]]) -> MerkleTree:
        """Build over ``values`` (each a row of ``types``); duplicate rows are refused."""
        if not values:
            raise Invalid("merkle", "a tree needs at least one leaf")
        leaves = sorted(leaf_hash(types, v) for v in values)
        if len(set(leaves)) != len(leaves):
            raise Invalid("merkle", "duplicate leaves")
        size = 2 * len(leaves) - 1
        nodes: list[bytes] = [b""] * size
        for i, leaf in enumerate(leaves):
            nodes[size - 1 - i] = leaf
        for i in range(size - 1 - len(leaves), -1, -1):
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
        return cls(tuple(nodes), {leaf: size - 1 - i for i, leaf in enumerate(leaves)})

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def proof(self, leaf: bytes) -> list[bytes]:
        """Sibling hashes from ``leaf`` up to the root, as ``MerkleProof.verify`` takes them."""
        at = self._at(leaf)
        path = []
        while at > 0:
            sibling = at - 1 if at % 2 == 0 else at + 1
            path.append(self.nodes[sibling])
            at = (at - 1) // 2
        return path

    def multi_proof(self, leaves: Sequence[bytes]) -> MultiProof:
        """One proof for several leaves, as ``@openzeppelin/merkle-tree``'s ``getMultiProof``
        builds it and ``MerkleProof.multiProofVerify`` takes it: the leaves come back in the
        order the proof consumes them (deepest first), which the caller must keep."""
        at = sorted({self._at(leaf) for leaf in leaves}, reverse=True)
        if len(at) != len(leaves):
            raise Invalid("merkle", "a multiproof cannot prove a leaf twice")
        queue, proof, flags = deque(at), [], []
        while queue and queue[0] > 0:
            j = queue.popleft()
            sibling = j - 1 if j % 2 == 0 else j + 1
            if queue and queue[0] == sibling:  # both children known: no proof hash needed
                flags.append(True)
                queue.popleft()
            else:
                flags.append(False)
                proof.append(self.nodes[sibling])
            queue.append((j - 1) // 2)
        if not at:
            proof.append(self.root)
        return MultiProof(tuple(self.nodes[i] for i in at), tuple(proof), tuple(flags))

    def _at(self, leaf: bytes) -> int:
        at = self.index.get(leaf)
        if at is None:
            raise Invalid("merkle", f"leaf 0x{leaf.hex()} is not in the tree")
        return at


@dataclass(frozen=True)
class MultiProof:
    """Leaves (in proof order), sibling hashes and flags, for ``multiProofVerify``."""

    leaves: tuple[bytes, ...]
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]

    def root(self) -> bytes:
        """The root these rebuild, as ``MerkleProof.processMultiProof`` computes it.

        Raises:
            Invalid: the sizes do not add up, or the flags ask for a hash or a sibling that
                is not there (``processMultiProof`` reverts on either).
        """
        self._check_flags()
        hashes = deque(self.leaves)
        siblings = deque(self.proof)
        for flag in self.flags:
            a = hashes.popleft()
            b = hashes.popleft() if flag else siblings.popleft()
            hashes.append(hash_pair(a, b))
        if not self.flags:
            return (self.leaves or self.proof)[0]
        return hashes[-1]

    def _check_flags(self) -> None:
        """Every step of :meth:`root` finds what it takes: a flag takes two queued hashes, a
        clear flag one queued hash and the next sibling (the queue grows by one per step)."""
        if len(self.leaves) + len(self.proof) != len(self.flags) + 1:
            raise Invalid("merkle", "multiproof sizes do not add up")
        queued, taken = len(self.leaves), 0
        for flag in self.flags:
            need = 2 if flag else 1
            if queued < need or (not flag and taken == len(self.proof)):
                raise Invalid("merkle", "multiproof flags ask for a hash that is not there")
            queued += 1 - need
            taken += not flag

    def single_proofs(self) -> dict[bytes, list[bytes]]:
        """Each shown leaf's own proof (for ``MerkleProof.verify``), read off this multiproof.

        Every step of :meth:`root` hashes two siblings, so a leaf's proof is the sibling of
        each node on its way up. A requester that finds its entry in an audit answer (shown in
        a multiproof only) disputes that entry with a proof of its own.

        Raises:
            Invalid: the sizes do not add up.
        """
        self.root()
        value = list(self.leaves)  # node id -> hash; leaves first, as the queue takes them
        queue = deque(range(len(value)))
        siblings = deque(self.proof)
        up: dict[int, tuple[int, bytes]] = {}  # node id -> (its parent's id, its sibling)
        for flag in self.flags:
            a = queue.popleft()
            b = queue.popleft() if flag else None
            b_hash = value[b] if b is not None else siblings.popleft()
            parent = len(value)
            value.append(hash_pair(value[a], b_hash))
            up[a] = (parent, b_hash)
            if b is not None:
                up[b] = (parent, value[a])
            queue.append(parent)
        proofs: dict[bytes, list[bytes]] = {}
        for start, leaf in enumerate(self.leaves):
            path, node = [], start
            while node in up:
                node, sibling = up[node]
                path.append(sibling)
            proofs[leaf] = path
        return proofs


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
