"""The Python Merkle tree against fixed vectors from @openzeppelin/merkle-tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consensus.errors import Invalid
from consensus.settlement.merkle import MerkleTree, MultiProof, leaf_hash, verify

VECTORS = json.loads((Path(__file__).parent / "merkle_vectors.json").read_text())


def _row(types: list[str], values: list[str]) -> list[Any]:
    out: list[Any] = []
    for t, v in zip(types, values, strict=True):
        out.append(int(v) if t == "uint256" else bytes.fromhex(v[2:]) if t == "bytes32" else v)
    return out


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: f"{c['kind']}-{len(c['values'])}")
def test_matches_openzeppelin_merkle_tree(case: dict[str, Any]) -> None:
    rows = [_row(case["types"], v) for v in case["values"]]
    tree = MerkleTree.of(case["types"], rows)
    assert "0x" + tree.root.hex() == case["root"]
    for row, expected in zip(rows, case["proofs"], strict=True):
        leaf = leaf_hash(case["types"], row)
        proof = tree.proof(leaf)
        assert ["0x" + p.hex() for p in proof] == expected
        assert verify(tree.root, leaf, proof)
        assert not verify(tree.root, leaf_hash(case["types"], [*row[:-1], row[-1] + 1]), proof)


def test_bad_trees_are_refused() -> None:
    with pytest.raises(Invalid, match="at least one leaf"):
        MerkleTree.of(["uint256"], [])
    with pytest.raises(Invalid, match="duplicate"):
        MerkleTree.of(["uint256"], [[1], [1]])
    with pytest.raises(Invalid, match="not in the tree"):
        MerkleTree.of(["uint256"], [[1]]).proof(b"\0" * 32)


@pytest.mark.parametrize(
    "case",
    [c for c in VECTORS if len(c["values"]) > 1],
    ids=lambda c: f"{c['kind']}-{len(c['values'])}",
)
def test_multiproofs_match_openzeppelin_merkle_tree(case: dict[str, Any]) -> None:
    rows = [_row(case["types"], v) for v in case["values"]]
    tree = MerkleTree.of(case["types"], rows)
    want = case["multi"]
    leaves = [leaf_hash(case["types"], _row(case["types"], v)) for v in want["leaves"]]
    mp = tree.multi_proof(list(reversed(leaves)))  # any order in, the proof's order out
    assert list(mp.leaves) == leaves
    assert ["0x" + p.hex() for p in mp.proof] == want["proof"]
    assert list(mp.flags) == want["proofFlags"]
    assert mp.root() == tree.root
    forged = MultiProof(
        (leaf_hash(case["types"], [*rows[0][:-1], 1]), *mp.leaves[1:]), mp.proof, mp.flags
    )
    assert forged.root() != tree.root


def test_bad_multiproofs_are_refused() -> None:
    tree = MerkleTree.of(["uint256"], [[1], [2], [3]])
    leaf = leaf_hash(["uint256"], [1])
    with pytest.raises(Invalid, match="twice"):
        tree.multi_proof([leaf, leaf])
    with pytest.raises(Invalid, match="not in the tree"):
        tree.multi_proof([b"\0" * 32])
    with pytest.raises(Invalid, match="do not add up"):
        MultiProof((leaf,), (), (True,)).root()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_each_leaf_of_a_multiproof_gets_a_proof_of_its_own(size: int) -> None:
    rows = [[i * 7 + 1] for i in range(size)]
    tree = MerkleTree.of(["uint256"], rows)
    leaves = [leaf_hash(["uint256"], r) for r in rows]
    for shown in ({0}, {size - 1}, set(range(0, size, 2)), set(range(size))):
        mp = tree.multi_proof([leaves[i] for i in sorted(shown)])
        proofs = mp.single_proofs()
        assert set(proofs) == set(mp.leaves)
        for leaf, proof in proofs.items():
            assert verify(tree.root, leaf, proof)
            assert len(proof) == len(tree.proof(leaf))  # the same path, found another way
    forged = MultiProof((b"\1" * 32, *mp.leaves[1:]), mp.proof, mp.flags)
    assert not verify(tree.root, b"\1" * 32, forged.single_proofs()[b"\1" * 32])
    with pytest.raises(Invalid, match="do not add up"):
        MultiProof((leaves[0],), (), (True,)).single_proofs()


@pytest.mark.parametrize(
    ("leaves", "proof", "flags"),
    [((), (b"x", b"y"), (False,)), ((b"x",), (b"y",), (True,)), ((b"x", b"y"), (), (False,))],
)
def test_multiproof_flags_that_ask_for_what_is_not_there_are_refused(
    leaves: tuple[bytes, ...], proof: tuple[bytes, ...], flags: tuple[bool, ...]
) -> None:
    """Sizes that add up are not enough: the contract accepts an answer of no entries with any
    proof, and what a node reads back from chain must fail as Invalid, not crash."""
    mp = MultiProof(leaves, proof, flags)
    for read in (mp.root, mp.single_proofs):
        with pytest.raises(Invalid, match="not there"):
            read()
