"""An anchor's entries shown whole in parts (``ShownEntries``, demanded with
``disputeEntries``): the parts rebuild the canonical entries tree, and each part comes with a
multiproof in the whole tree whose single proofs a watcher disputes an entry with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry
from consensus.settlement.merkle import ENTRY_TYPES, MerkleTree, verify
from consensus.settlement.shown import ShownEntries

ENTRIES = st.lists(
    st.builds(
        Entry,
        requester=st.binary(min_size=20, max_size=20),
        worker=st.binary(min_size=20, max_size=20),
        job=st.binary(min_size=32, max_size=32),
        task=st.binary(min_size=32, max_size=32),
        amount=st.integers(1, 10**24),
        previous=st.integers(0, 10**24),
    ),
    min_size=1,
    max_size=120,
    unique_by=lambda e: e.leaf(),
)


@given(entries=ENTRIES, per_part=st.integers(1, 50))
def test_parts_prove_every_entry_in_the_canonical_tree(entries: list[Entry], per_part: int) -> None:
    tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in entries])
    shown = ShownEntries.of_rows(entries, per_part)
    assert shown.root() == tree.root
    assert sorted(shown.rows(), key=Entry.leaf) == sorted(entries, key=Entry.leaf)
    proved = []
    for part, proof in shown.part_proofs():
        assert proof.root() == tree.root  # what multiProofVerify takes against the root
        assert proof.leaves == tuple(e.leaf() for e in part)
        singles = proof.single_proofs()
        for e in part:
            assert verify(tree.root, e.leaf(), singles[e.leaf()])
            proved.append(e)
    assert len(proved) == len(entries)
    for e in entries[:5]:
        assert verify(tree.root, e.leaf(), shown.proof_of(e))


def test_an_entry_not_shown_has_no_proof() -> None:
    e = Entry(b"\x01" * 20, b"\x02" * 20, b"\x03" * 32, b"\x04" * 32, 5, 0)
    shown = ShownEntries.of_rows([e])
    assert shown.part_proofs()[0][1].root() == e.leaf() == shown.root()
    other = Entry(b"\x01" * 20, b"\x02" * 20, b"\x03" * 32, b"\x04" * 32, 6, 5)
    with pytest.raises(Invalid, match="no leaf"):
        shown.proof_of(other)
