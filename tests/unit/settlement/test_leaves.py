"""Earnings leaves in parts: any number of workers, put back together only when they are whole
and hash to the root; a forged part spoils only the set it was mixed into."""

from __future__ import annotations

import pytest

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import Wei
from consensus.settlement.leaves import FinalLeaves, LeavesAssembly, leaves_parts
from consensus.settlement.merkle import EARNINGS_TYPES, leaf_hash, verify
from consensus.settlement.messages import MAX_LEAVES, EpochLeaves

NOW = 1_800_000_000_000
EARNINGS = {i.to_bytes(20, "big"): 10**18 + i for i in range(1, 8)}  # seven workers
ROOT = FinalLeaves(3, b"", EARNINGS).tree().root


def messages(
    earnings: dict[bytes, int] = EARNINGS, per: int = 3, root: bytes = ROOT
) -> list[EpochLeaves]:
    out = []
    for part, parts, workers, amounts in leaves_parts(earnings, per):
        out.append(EpochLeaves(
            expires_ms=NOW, nonce=new_nonce(), index=3, earnings_root=root, part=part,
            parts=parts, workers=workers, amounts=amounts,
        ))  # fmt: skip
    return out


def test_parts_arriving_in_any_order_and_twice_give_back_every_leaf() -> None:
    sent = messages()
    assert [len(m.workers) for m in sent] == [3, 3, 1]
    assembly = LeavesAssembly.first(sent[2])
    assert assembly.add(sent[2]) is None
    assert assembly.add(sent[0]) is None
    assert assembly.add(sent[0]) is None, "a repeat is not the missing part"
    whole = assembly.add(sent[1])
    assert whole is not None and whole.amounts == EARNINGS and whole.index == 3
    worker, amount = next(iter(EARNINGS.items()))
    leaf = leaf_hash(EARNINGS_TYPES, [worker, amount])
    assert verify(ROOT, leaf, whole.tree().proof(leaf)), "a proof the contract will take"


def test_one_message_is_enough_below_the_limit() -> None:
    (only,) = messages(per=MAX_LEAVES)
    assert LeavesAssembly.first(only).add(only) == FinalLeaves(3, ROOT, EARNINGS)


def test_an_inflated_leaf_spoils_the_set_it_joined() -> None:
    inflated = {**EARNINGS, max(EARNINGS): EARNINGS[max(EARNINGS)] + 1}
    honest, forged = messages(), messages(inflated, root=ROOT)  # claims the real root
    assembly = LeavesAssembly.first(honest[0])
    assembly.add(honest[0])
    assembly.add(honest[1])
    with pytest.raises(Invalid, match="do not hash"):
        assembly.add(forged[2])


def test_parts_of_another_epoch_root_or_split_are_refused() -> None:
    assembly = LeavesAssembly.first(messages()[0])
    other_split = messages(per=4)[0]
    other_root = messages(root=b"\x01" * 32)[0]
    for stranger in (other_split, other_root):
        with pytest.raises(Invalid, match="another"):
            assembly.add(stranger)


def test_overlapping_parts_are_refused() -> None:
    first, _, third = messages()
    overlap = EpochLeaves(expires_ms=NOW, nonce=new_nonce(), index=3, earnings_root=ROOT, part=1,
                          parts=3, workers=first.workers, amounts=first.amounts)  # fmt: skip
    assembly = LeavesAssembly.first(first)
    assembly.add(first)
    assembly.add(overlap)
    with pytest.raises(Invalid, match="out of order"):
        assembly.add(third)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"part": 3}, "leaves.part"),
        ({"parts": 70_000, "part": 0}, "leaves.part"),
        ({"index": -1}, "leaves.index"),
        ({"workers": [b"\x02" * 20, b"\x01" * 20]}, "leaves.workers"),
        ({"workers": [b"\x01" * 20, b"\x01" * 20]}, "leaves.workers"),
        ({"amounts": [Wei(1)]}, "leaves.amounts"),
    ],
)
def test_a_malformed_part_names_its_field(change: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "expires_ms": NOW, "nonce": new_nonce(), "index": 3, "earnings_root": ROOT, "part": 0,
        "parts": 3, "workers": [b"\x01" * 20, b"\x02" * 20], "amounts": [Wei(1), Wei(2)],
    }  # fmt: skip
    with pytest.raises(Invalid) as caught:
        EpochLeaves(**{**fields, **change})  # type: ignore[arg-type]
    assert caught.value.what == field


def test_no_earnings_make_no_messages() -> None:
    with pytest.raises(Invalid, match="0 parts"):
        leaves_parts({})
