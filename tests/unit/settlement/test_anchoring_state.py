"""The anchoring machine saved and loaded: a restart carries on exactly where it was."""

from __future__ import annotations

import msgpack
import pytest

from consensus.errors import Invalid
from consensus.settlement import anchoring_state
from consensus.settlement.anchoring import Anchoring, Finalize, Post
from tests.unit.settlement.test_anchoring import J1, J2, W1, W2, WINDOW_MS, entry, machine

BIG = 3 * 10**30  # beyond msgpack's 64-bit integers


def saved(m: Anchoring) -> Anchoring:
    return anchoring_state.load(msgpack.unpackb(msgpack.packb(anchoring_state.dump(m))))


def test_a_machine_saved_mid_epoch_carries_on_identically() -> None:
    m = machine(1000, fee_bps=100)
    m.on_voucher(entry(J1, W1, BIG), b"s1")
    (post,) = m.on_tick(0)
    assert isinstance(post, Post)
    posting = saved(m)  # killed after saving "posting", before the chain answered
    assert posting.state == "posting" and posting.pending is not None
    assert posting.pending.earnings_tree.root == post.epoch.earnings_tree.root
    assert posting.pending.entries_tree.root == post.epoch.entries_tree.root
    for each in (m, posting):
        each.on_posted(0, window_end_ms=WINDOW_MS)
        each.on_voucher(entry(J2, W2, 40), b"s2")
    pending = saved(posting)
    assert anchoring_state.dump(pending) == anchoring_state.dump(m)
    for each in (m, pending):
        (effect,) = each.on_tick(WINDOW_MS)  # final; the new voucher goes in the next epoch
        assert isinstance(effect, Post) and effect.epoch.debits == {entry(J2, W2, 40).requester: 40}
    assert pending.base_earnings == m.base_earnings and pending.base_earnings[W1] > 0
    assert pending.spends == m.spends and len(m.spends) == 1  # the spends survive a restart


def test_a_final_epoch_not_yet_finalized_on_chain_is_finalized_after_a_restart() -> None:
    m = machine(1000, fee_bps=0)
    m.on_voucher(entry(J1, W1, 5), b"s")
    m.on_tick(0)
    m.on_posted(3, window_end_ms=10)
    assert saved(m).on_tick(10) == [Finalize(3)]


def test_forget_drops_what_verification_failed_but_keeps_what_is_anchored() -> None:
    m = machine(1000, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"a")
    m.on_tick(0)
    m.on_posted(0, window_end_ms=10)
    m.on_tick(10)  # final: J1 is anchored at 100
    m.on_voucher(entry(J1, W1, 150), b"b")
    m.on_voucher(entry(J2, W2, 40), b"c")
    m.forget(entry(J1, W1, 0).line)
    m.forget(entry(J2, W2, 0).line)
    assert m.on_tick(2000) == []  # neither growth is anchored


def test_a_state_from_another_version_is_refused() -> None:
    doc = anchoring_state.dump(Anchoring(1000, fee_bps=0)) | {"v": 99}
    with pytest.raises(Invalid, match="version 99"):
        anchoring_state.load(doc)
