"""The checkpoint Merkle tree: proofs verify, tampering and reordering do not."""

from __future__ import annotations

import pytest
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.verify import tree
from consensus.verify.messages import Leaf
from gpu.runtime import GENESIS, chain


def hashes(n: int, salt: bytes = b"") -> list[bytes]:
    return [blake3(salt + i.to_bytes(4, "big")).digest() for i in range(n)]


@given(st.integers(1, 70), st.data())
def test_every_leaf_proves_and_nothing_else_does(n: int, data: st.DataObject) -> None:
    leaves = tree.chain_leaves(hashes(n))
    levels = tree.levels(leaves)
    root = levels[-1][0]
    i = data.draw(st.integers(0, n - 1))
    path = tree.proof(levels, i)
    assert tree.verify(root, leaves[i], n, path)
    forged = Leaf(index=i, hash=bytes(32), chained=leaves[i].chained)
    assert not tree.verify(root, forged, n, path)
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
        moved = Leaf(index=j, hash=leaves[i].hash, chained=leaves[i].chained)
        assert not tree.verify(root, moved, n, path)
        assert not tree.verify(root, moved, n, tree.proof(levels, j))


def test_reordered_checkpoints_change_the_root() -> None:
    h = hashes(8)
    swapped = [h[0], h[2], h[1], *h[3:]]
    assert tree.root(tree.chain_leaves(h)) != tree.root(tree.chain_leaves(swapped))


def test_chain_matches_the_runtime() -> None:
    h = hashes(3)
    leaves = tree.chain_leaves(h)
    assert leaves[0].chained == chain(GENESIS, h[0])
    assert leaves[2].chained == chain(leaves[1].chained, h[2])


def test_leaves_out_of_position_are_refused() -> None:
    leaves = tree.chain_leaves(hashes(3))
    with pytest.raises(Invalid, match=r"tree.leaves\[1\]"):
        tree.levels([leaves[0], leaves[2], leaves[1]])
    with pytest.raises(Invalid, match="at least one leaf"):
        tree.levels([])


def test_a_proof_of_the_wrong_length_fails() -> None:
    leaves = tree.chain_leaves(hashes(5))
    levels = tree.levels(leaves)
    path = tree.proof(levels, 4)
    assert tree.verify(levels[-1][0], leaves[4], 5, path)
    assert not tree.verify(levels[-1][0], leaves[4], 5, [*path, bytes(32)])
    assert not tree.verify(levels[-1][0], leaves[4], 5, path[:-1])
