"""Settlement gossip, sealed and opened at its largest (leaves in parts: test_leaves.py)."""

from __future__ import annotations

import nacl.signing
import pytest

from consensus.envelope import new_nonce, open_envelope, seal_body
from consensus.errors import Invalid
from consensus.kinds import Registry, Wei
from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Spend
from consensus.settlement.merkle import EARNINGS_TYPES, MerkleTree
from consensus.settlement.messages import MAX_LEAVES, SETTLEMENT_KINDS, EpochLeaves, SettledVoucher

NOW = 1_800_000_000_000
W1, W2 = b"\x02" * 20, b"\x03" * 20


def test_a_settled_voucher_travels_with_amounts_beyond_64_bits() -> None:
    ref = TaskRef(job_id=b"\x01" * 16, task=3, attempt=1)
    fields = {"expires_ms": NOW + 1000, "nonce": new_nonce(), "ref": ref,
              "requester": b"\x01" * 20, "worker": W1, "amount_wei": Wei(5 * 10**30),
              "signature": b"\x09" * 65, "spend_sig": b"\x08" * 65}  # fmt: skip
    v = SettledVoucher(**fields, spend_wei=Wei(7 * 10**30))
    raw = seal_body(nacl.signing.SigningKey.generate(), v)
    opened = open_envelope(raw, NOW, Registry(SETTLEMENT_KINDS))
    assert opened.body == v
    assert v.entry().amount == 5 * 10**30 and v.entry().job == b"\x01" * 16 + b"\0" * 16
    assert v.spend() == Spend(b"\x01" * 20, 7 * 10**30, b"\x08" * 65)
    with pytest.raises(Invalid, match="spend_wei"):  # a spend must cover its own voucher
        SettledVoucher(**fields, spend_wei=Wei(5 * 10**30 - 1))


def test_an_epoch_of_max_leaves_passes_the_decoder_and_the_size_limit() -> None:
    workers = [i.to_bytes(20, "big") for i in range(1, MAX_LEAVES + 1)]
    amounts = [Wei(10**30 + i) for i in range(MAX_LEAVES)]  # amounts as large as they come
    tree = MerkleTree.of(EARNINGS_TYPES, [[w, a] for w, a in zip(workers, amounts, strict=True)])
    full = EpochLeaves(expires_ms=NOW + 1000, nonce=new_nonce(), index=9, earnings_root=tree.root,
                       part=0, parts=1, workers=workers, amounts=amounts)  # fmt: skip
    raw = seal_body(nacl.signing.SigningKey.generate(), full)
    assert len(raw) < 64 * 1024
    assert open_envelope(raw, NOW, Registry(SETTLEMENT_KINDS)).body == full
