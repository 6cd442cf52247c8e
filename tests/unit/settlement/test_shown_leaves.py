"""Earnings leaves shown whole in parts (``consensus.settlement.shown``): any tree size and part
size gives parts that hash to the tree's nodes at one depth and those to its root, every leaf
proves against the root, and a part short of a leaf, or nodes of another count, are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree, hash_pair, leaf_hash, verify
from consensus.settlement.shown import MAX_PARTS, Row, ShownLeaves


def tree_in_order(rows: list[Row]) -> tuple[MerkleTree, dict[bytes, Row]]:
    """An earnings tree over ``rows`` in their order, not sorted by hash (OpenZeppelin's
    layout, which a multiproof of every leaf takes in any leaf order): what an anchorer could
    post that nobody else could rebuild; with each leaf's row."""
    leaves = [leaf_hash(EARNINGS_TYPES, [w, a]) for w, a in rows]
    size = 2 * len(leaves) - 1
    nodes = [b""] * size
    for i, leaf in enumerate(leaves):
        nodes[size - 1 - i] = leaf
    for i in range(size - 1 - len(leaves), -1, -1):
        nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
    index = {leaf: size - 1 - i for i, leaf in enumerate(leaves)}
    return MerkleTree(tuple(nodes), index), dict(zip(leaves, rows, strict=True))


def paired_otherwise(rows: dict[bytes, int]) -> tuple[MerkleTree, ShownLeaves]:
    """Four leaves (or more, a multiple of four), sorted by hash but paired 0-2 and 1-3 in
    each four, and the tree in parts of two: every part ascending, so the contract takes
    them, and the root not the sorted tree's."""
    ranked = sorted(rows.items(), key=lambda r: leaf_hash(EARNINGS_TYPES, list(r)))
    order = [ranked[i + j] for i in range(0, len(ranked), 4) for j in (0, 2, 1, 3)]
    tree, by_leaf = tree_in_order(order)
    return tree, ShownLeaves.of_tree(tree, by_leaf, per_part=2)


ROWS = st.dictionaries(st.binary(min_size=20, max_size=20), st.integers(1, 10**24), min_size=1,
                       max_size=300)  # fmt: skip


@given(rows=ROWS, per_part=st.integers(1, 400))
def test_parts_rebuild_the_canonical_tree_and_prove_every_leaf(
    rows: dict[bytes, int], per_part: int
) -> None:
    tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(rows.items())])
    shown = ShownLeaves.of_rows(rows.items(), per_part)
    assert shown.root() == tree.root
    assert sorted(shown.rows()) == sorted(rows.items()) and shown.amounts() == rows
    n, k = len(rows), len(shown.nodes)
    assert k <= min(n, MAX_PARTS) and k & (k - 1) == 0
    if max(len(p) for p in shown.parts) > per_part:  # only when the tree allows no deeper split
        assert 2 * k > min(n, MAX_PARTS)
    for w, a in list(rows.items())[:5]:
        assert verify(tree.root, leaf_hash(EARNINGS_TYPES, [w, a]), shown.proof(w, a))


def test_a_part_short_of_a_leaf_or_nodes_of_another_count_are_refused() -> None:
    rows = {bytes([i]) * 20: i for i in range(1, 9)}
    shown = ShownLeaves.of_rows(rows.items(), per_part=2)
    assert len(shown.nodes) == 4
    with pytest.raises(Invalid, match="part 1"):
        shown.__class__(shown.nodes, (shown.parts[0], shown.parts[1][:1], *shown.parts[2:])).root()
    with pytest.raises(Invalid, match="3 nodes"):
        replace(shown, nodes=shown.nodes[:3]).root()
    with pytest.raises(Invalid, match="no leaf"):
        shown.proof(bytes([1]) * 20, 2)


def test_leaves_paired_otherwise_show_in_ascending_parts_under_another_root() -> None:
    rows = {bytes([i]) * 20: i * 1000 for i in range(1, 5)}
    tree, shown = paired_otherwise(rows)
    assert shown.root() == tree.root
    canonical = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(rows.items())])
    assert shown.root() != canonical.root and shown.amounts() == rows
    assert len(shown.parts) == 2
    for part in shown.parts:  # as the contract checks them
        hashes = [leaf_hash(EARNINGS_TYPES, list(r)) for r in part]
        assert hashes == sorted(hashes)
    for w, a in rows.items():
        assert verify(shown.root(), leaf_hash(EARNINGS_TYPES, [w, a]), shown.proof(w, a))


@given(rows=ROWS, per_part=st.integers(1, 400))
def test_the_whole_tree_comes_back_from_its_parts(rows: dict[bytes, int], per_part: int) -> None:
    tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in sorted(rows.items())])
    assert ShownLeaves.of_rows(rows.items(), per_part).tree() == tree


def test_a_tree_paired_otherwise_comes_back_for_multiproofs() -> None:
    rows = {bytes([i]) * 20: i * 1000 for i in range(1, 9)}
    tree, shown = paired_otherwise(rows)
    back = shown.tree()
    assert back == tree and back.root == shown.root()
    some = [leaf_hash(EARNINGS_TYPES, [w, a]) for w, a in list(rows.items())[::3]]
    assert back.multi_proof(some).root() == tree.root


def test_parts_of_another_shape_give_no_whole_tree() -> None:
    """Three leaves under one node and one under the other hash to a root as well (single
    proofs hold), but not in OpenZeppelin's layout for four leaves: no multiproofs."""
    rows = [(bytes([i]) * 20, i) for i in range(1, 5)]
    three = ShownLeaves.of_rows(rows[:3], per_part=3)
    node = MerkleTree.of(EARNINGS_TYPES, [list(rows[3])]).root
    odd = ShownLeaves((three.root(), node), (three.rows(), (rows[3],)))
    assert odd.root() and odd.tree() is None
