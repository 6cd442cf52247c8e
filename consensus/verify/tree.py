"""The checkpoint Merkle tree: one leaf per segment, BLAKE3, positional.

A leaf is ``H(0x00 || index || hash || chained)`` and an inner node ``H(0x01 || left || right)``
(domain-separated, so a leaf can never pass for a node). Leaves stay in segment order and an odd
node is carried up unchanged, so a proof is the list of siblings with the index telling left
from right: a worker cannot swap two segments' checkpoints and keep the root.

The chained hash in every leaf lets a sentry check that two adjacent leaves belong to one
history: ``chained_i == H(chained_{i-1} || hash_i)`` (the runtime's
:func:`gpu.runtime.chain`, repeated here so ``consensus`` stays pure).
"""

from __future__ import annotations

from collections.abc import Sequence

from blake3 import blake3

from consensus.errors import Invalid
from consensus.verify.messages import Leaf

GENESIS = bytes(32)


def leaf_hash(leaf: Leaf) -> bytes:
    return blake3(b"\x00" + leaf.index.to_bytes(8, "big") + leaf.hash + leaf.chained).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


def chain(previous: bytes, state_hash: bytes) -> bytes:
    return blake3(previous + state_hash).digest()


def levels(leaves: Sequence[Leaf]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last.

    Raises:
        Invalid: no leaves, or a leaf out of position.
    """
    if not leaves:
        raise Invalid("tree", "a tree needs at least one leaf")
    for position, leaf in enumerate(leaves):
        if leaf.index != position:
            raise Invalid(f"tree.leaves[{position}]", f"has index {leaf.index}")
    level = [leaf_hash(leaf) for leaf in leaves]
    out = [level]
    while len(level) > 1:
        pairs = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
        out.append(level)
    return out


def root(leaves: Sequence[Leaf]) -> bytes:
    return levels(leaves)[-1][0]


def proof(tree: list[list[bytes]], index: int) -> list[bytes]:
    """Siblings from leaf ``index`` to the root (a level where it has none adds nothing)."""
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify(root_hash: bytes, leaf: Leaf, count: int, path: Sequence[bytes]) -> bool:
    """Whether ``leaf`` is at its index in a tree of ``count`` leaves with ``root_hash``."""
    if not 0 <= leaf.index < count:
        return False
    node, index, width, used = leaf_hash(leaf), leaf.index, count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(path):
                return False
            other = path[used]
            used += 1
            node = node_hash(other, node) if index % 2 else node_hash(node, other)
        index, width = index // 2, (width + 1) // 2
    return used == len(path) and node == root_hash


def chain_leaves(hashes: Sequence[bytes], start: bytes = GENESIS) -> list[Leaf]:
    """The leaves of a run whose segments' state hashes are ``hashes``."""
    leaves, chained = [], start
    for index, state in enumerate(hashes):
        chained = chain(chained, state)
        leaves.append(Leaf(index=index, hash=state, chained=chained))
    return leaves
