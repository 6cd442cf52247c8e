"""The checkpoint Merkle tree: one leaf per segment, BLAKE3, positional.

A leaf is ``H(0x00 || index || hash || chained)`` and an inner node ``H(0x01 || left || right)``
(domain-separated, so a leaf can never pass for a node). Leaves stay in segment order and an odd
node is carried up unchanged, so a proof is the list of siblings with the index telling left
from right: a worker cannot swap two segments' checkpoints and keep the root.

A tree may cover a range ``first..count-1`` (an attempt resumed from another worker's
checkpoint ``first - 1``): its leaves keep their segment indices, sit at positions
``index - first``, and their chain starts from the resume checkpoint's chained hash.

The chained hash in every leaf lets a sentry check that two adjacent leaves belong to one
history: ``chained_i == H(chained_{i-1} || hash_i)`` (the runtime's
:func:`gpu.runtime.chain`, repeated here so ``consensus`` stays pure).

A leaf of an attestation with points also holds the digest of the segment's inner point
hashes, appended to what its leaf hash covers: so the root commits to those states as well,
before any seed exists. A leaf without points hashes as it always did.
"""

from __future__ import annotations

from collections.abc import Sequence

from blake3 import blake3

from consensus.errors import Invalid
from consensus.verify.messages import Leaf

GENESIS = bytes(32)


def leaf_hash(leaf: Leaf) -> bytes:
    head = b"\x00" + leaf.index.to_bytes(8, "big") + leaf.hash + leaf.chained
    return blake3(head + leaf.points).digest()


def points_digest(points: Sequence[bytes]) -> bytes:
    """What a leaf holds of its segment's inner point hashes (in step order)."""
    return blake3(b"idlegrid.verify.points/1" + b"".join(points)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


def chain(previous: bytes, state_hash: bytes) -> bytes:
    return blake3(previous + state_hash).digest()


def levels(leaves: Sequence[Leaf], first: int = 0) -> list[list[bytes]]:
    """Every level of the tree over segments ``first``.., leaves first, root last.

    Raises:
        Invalid: no leaves, or a leaf out of position.
    """
    if not leaves:
        raise Invalid("tree", "a tree needs at least one leaf")
    for position, leaf in enumerate(leaves):
        if leaf.index != first + position:
            raise Invalid(
                f"tree.leaves[{position}]", f"has index {leaf.index}, not {first + position}"
            )
    level = [leaf_hash(leaf) for leaf in leaves]
    out = [level]
    while len(level) > 1:
        pairs = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
        out.append(level)
    return out


def root(leaves: Sequence[Leaf], first: int = 0) -> bytes:
    return levels(leaves, first)[-1][0]


def proof(tree: list[list[bytes]], index: int, first: int = 0) -> list[bytes]:
    """Siblings from segment ``index``'s leaf to the root (a level where it has none adds
    nothing), in a tree over segments ``first``.."""
    path, index = [], index - first
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify(root_hash: bytes, leaf: Leaf, count: int, path: Sequence[bytes], first: int = 0) -> bool:
    """Whether ``leaf`` is at its index in a tree over segments ``first..count-1`` with
    ``root_hash``."""
    if not 0 <= first <= leaf.index < count:
        return False
    node, index, width, used = leaf_hash(leaf), leaf.index - first, count - first, 0
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


def chain_leaves(
    hashes: Sequence[bytes],
    start: bytes = GENESIS,
    first: int = 0,
    points: Sequence[Sequence[bytes]] | None = None,
) -> list[Leaf]:
    """The leaves of a run whose segments ``first``.. have the state hashes ``hashes``, the
    chain continuing from ``start`` (the chained hash of segment ``first - 1``); with
    ``points``, each segment's inner point hashes (one list per segment) go in as digests."""
    leaves, chained = [], start
    for position, state in enumerate(hashes):
        chained = chain(chained, state)
        digest = points_digest(points[position]) if points is not None else b""
        leaves.append(Leaf(index=first + position, hash=state, chained=chained, points=digest))
    return leaves
