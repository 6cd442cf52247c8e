"""Following another anchorer's epochs: rebuilding them, adopting them, and whose turn it is."""

from __future__ import annotations

import pytest

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.settlement.anchoring import Anchoring, Post
from consensus.settlement.epoch import Entry, Spend, assemble
from consensus.settlement.following import TAKEOVER_EPOCHS, ChainAnchor, may_post, rebuild
from consensus.settlement.messages import EpochEntries, entries_parts
from consensus.settlement.shown import ShownLeaves
from node.chain.follower import CADENCE_ANCHORS, MAX_ROOTS, Follower
from tests.unit.settlement.test_shown_leaves import paired_otherwise

R, W1, W2, ME, THEM = (bytes([i]) * 20 for i in range(1, 6))
J1, J2, T = b"\x11" * 32, b"\x12" * 32, b"\x00" * 32
EPOCH_MS, WINDOW_MS, FEE = 60_000, 3_600_000, 100


def anchor_of(entries: list[Entry], index: int = 0, state: str = "final",
              by: bytes = THEM, posted_ms: int = 0) -> ChainAnchor:  # fmt: skip
    epoch = assemble(entries, {}, {}, FEE)
    roots = (epoch.earnings_tree.root, epoch.entries_tree.root)
    return ChainAnchor(index, by, *roots, state, posted_ms)


def test_an_epoch_is_rebuilt_only_from_all_of_its_entries_over_the_same_base() -> None:
    entries = [Entry(R, W1, J1, T, 100), Entry(R, W2, J2, T, 40)]
    anchor = anchor_of(entries)
    epoch = rebuild(anchor, reversed(entries), {}, {}, FEE)  # the order heard does not matter
    assert epoch is not None and epoch.debits == {R: 140}
    assert rebuild(anchor, entries[:1], {}, {}, FEE) is None  # one not heard yet
    assert rebuild(anchor, [], {}, {}, FEE) is None
    assert rebuild(anchor, entries, {(J1, T, W1): 50}, {}, FEE) is None  # another base
    assert rebuild(anchor, entries, {}, {}, fee_bps=0) is None  # leaves net of another fee


def test_an_epoch_whose_tree_is_not_the_sorted_one_is_rebuilt_from_its_shown_leaves() -> None:
    """Its leaves right but paired otherwise: followed only from the leaves shown on chain,
    and only while they give every worker exactly the rebuilt earnings."""
    entries = [Entry(R, w, J1, T, 100 * (i + 1)) for i, w in enumerate((W1, W2, ME, THEM))]
    honest = assemble(entries, {}, {}, FEE)
    _, shown = paired_otherwise(honest.earnings)
    anchor = ChainAnchor(0, THEM, shown.root(), honest.entries_tree.root, "final", 0)
    assert rebuild(anchor, entries, {}, {}, FEE) is None  # nobody could follow it before
    epoch = rebuild(anchor, entries, {}, {}, FEE, shown=shown)
    assert epoch is not None and epoch.earnings == honest.earnings
    assert rebuild(anchor, entries[1:], {}, {}, FEE, shown=shown) is None  # entries short
    other = ShownLeaves.of_rows(honest.earnings.items())  # the sorted tree: not this root
    assert rebuild(anchor, entries, {}, {}, FEE, shown=other) is None
    swapped = ShownLeaves(shown.nodes, (shown.parts[1], shown.parts[0][::-1]))
    assert rebuild(anchor, entries, {}, {}, FEE, shown=swapped) is None  # not its root


def test_shown_leaves_are_followed_only_when_they_give_the_earnings_the_entries_make() -> None:
    entries = [Entry(R, w, J1, T, 100 * (i + 1)) for i, w in enumerate((W1, W2, ME, THEM))]
    honest = assemble(entries, {}, {}, FEE)
    raised = {**honest.earnings, W1: honest.earnings[W1] + 1}  # one wei more for W1
    _, shown = paired_otherwise(raised)
    anchor = ChainAnchor(0, THEM, shown.root(), honest.entries_tree.root, "final", 0)
    assert rebuild(anchor, entries, {}, {}, FEE, shown=shown) is None
    # A lower second leaf for W1 claims nothing (a claim takes the larger): followed.
    twice = ShownLeaves.of_rows([*honest.earnings.items(), (W1, 1)], per_part=2)
    anchor = ChainAnchor(0, THEM, twice.root(), honest.entries_tree.root, "final", 0)
    epoch = rebuild(anchor, entries, {}, {}, FEE, shown=twice)
    assert epoch is not None and epoch.earnings == honest.earnings
    higher = ShownLeaves.of_rows([*honest.earnings.items(), (W1, 10**6)], per_part=2)
    anchor = ChainAnchor(0, THEM, higher.root(), honest.entries_tree.root, "final", 0)
    assert rebuild(anchor, entries, {}, {}, FEE, shown=higher) is None  # a leaf raised
    extra = ShownLeaves.of_rows([*honest.earnings.items(), (J1[:20], 1)], per_part=2)
    anchor = ChainAnchor(0, THEM, extra.root(), honest.entries_tree.root, "final", 0)
    assert rebuild(anchor, entries, {}, {}, FEE, shown=extra) is None  # a worker made up


@pytest.mark.parametrize(
    ("latest", "now_ms", "allowed"),
    [
        (None, 0, True),  # nothing anchored yet
        (ChainAnchor(3, ME, b"", b"", "pending", 0), 0, True),  # ours: the machine decides
        (ChainAnchor(3, THEM, b"", b"", "pending", 0), 10**12, False),  # theirs, in its window
        (ChainAnchor(3, THEM, b"", b"", "final", 0), TAKEOVER_EPOCHS * EPOCH_MS + WINDOW_MS - 1,
         False),  # recent: it is anchoring
        (ChainAnchor(3, THEM, b"", b"", "final", 0), TAKEOVER_EPOCHS * EPOCH_MS + WINDOW_MS, True),
        (ChainAnchor(3, THEM, b"", b"", "void", 0), TAKEOVER_EPOCHS * EPOCH_MS + WINDOW_MS, True),
    ],
)  # fmt: skip
def test_whose_turn(latest: ChainAnchor | None, now_ms: int, allowed: bool) -> None:
    assert may_post(latest, ME, now_ms, EPOCH_MS, WINDOW_MS) is allowed


def test_an_anchor_state_is_checked() -> None:
    with pytest.raises(Invalid, match=r"anchor\.state"):
        ChainAnchor(0, THEM, b"", b"", "gone", 0)


def test_the_machine_adopts_another_epoch_and_anchors_only_what_grew_after_it() -> None:
    m = Anchoring(EPOCH_MS, fee_bps=FEE)
    m.on_spend(Spend(R, 2**200, b"spend"))
    theirs = [Entry(R, W1, J1, T, 100)]
    m.on_voucher(theirs[0], b"s1")
    epoch = rebuild(anchor_of(theirs), theirs, m.base_lines, m.base_earnings, FEE)
    assert epoch is not None
    assert m.on_tick(0, may_post=False) == []  # standing by: nothing posted
    m.adopt(0, epoch)
    assert (m.index, m.base_lines, m.base_earnings) == (0, {(J1, T, W1): 100}, {W1: 99})
    assert m.on_tick(1) == []  # all anchored already
    m.adopt(1, None)  # a voided epoch of theirs: the base stays
    m.on_voucher(Entry(R, W1, J1, T, 300), b"s2")
    (effect,) = m.on_tick(2)
    assert isinstance(effect, Post) and effect.epoch.debits == {R: 200}
    assert effect.epoch.earnings == {W1: 99 + 198}
    with pytest.raises(RuntimeError, match="bug"):
        m.adopt(2, None)  # only while idle
    m.on_post_failed()
    with pytest.raises(RuntimeError, match="bug"):
        m.adopt(1, None)  # never backwards


def test_a_pending_epoch_of_ours_still_becomes_final_while_standing_by() -> None:
    m = Anchoring(EPOCH_MS, fee_bps=0)
    m.on_spend(Spend(R, 2**200, b"spend"))
    m.on_voucher(Entry(R, W1, J1, T, 100), b"s")
    (post,) = m.on_tick(0)
    assert isinstance(post, Post)
    m.on_posted(0, window_end_ms=WINDOW_MS)
    assert m.on_tick(WINDOW_MS, may_post=False) == []  # no Finalize: another holds the chain
    assert m.state == "idle" and m.base_lines == {(J1, T, W1): 100} and m.unfinal
    m.adopt(1, None)
    assert not m.unfinal  # the chain moved past our epoch: it is final there


def entries_message(amount: int) -> EpochEntries:
    epoch = assemble([Entry(R, W1, J1, T, amount)], {}, {}, FEE)
    ((requester, part, parts, rows),) = entries_parts(epoch, {})
    return EpochEntries(expires_ms=2**40, nonce=new_nonce(), index=0,
                        entries_root=epoch.entries_tree.root, requester=requester, part=part,
                        parts=parts, rows=rows)  # fmt: skip


def test_made_up_roots_cannot_push_out_the_one_the_chain_shows() -> None:
    follower = Follower(ME)
    real = entries_message(100)
    follower.on_chain = {real.entries_root}
    assert follower.hear(real) == 1 and follower.hear(real) == 0  # heard again: nothing new
    for amount in range(1, 3 * MAX_ROOTS):  # a bonded sentry's made-up epochs
        follower.hear(entries_message(100 + amount))
    assert len(follower.heard) == MAX_ROOTS and real.entries_root in follower.heard
    restored = Follower(ME)
    restored.load(follower.dump())  # saved with the anchoring state: what the chain showed
    assert restored.heard == {real.entries_root: follower.heard[real.entries_root]}
    follower.followed = 0
    assert follower.hear(entries_message(7)) == 0, "an epoch we followed already"


def test_a_standby_waits_on_the_active_anchorers_cadence_when_it_is_slower_than_ours() -> None:
    """Our epoch is a minute, theirs three hours (the window is one): a takeover three of our
    minutes after their window would race a live anchorer, so the wait follows the gaps seen
    between their anchors, less the window (anchors come at most once a window anyway)."""
    follower, m = Follower(ME), Anchoring(EPOCH_MS, fee_bps=FEE)
    theirs = 3 * WINDOW_MS
    m.index = 10  # followed up to the latest
    seen = [ChainAnchor(i, THEM, b"", b"", "final", i * theirs) for i in range(8, 11)]
    for a in seen:
        assert not follower.may_post(m, [a], a.posted_ms, WINDOW_MS)
    assert follower.cadence_ms() == theirs
    last = seen[-1].posted_ms
    quiet = last + TAKEOVER_EPOCHS * EPOCH_MS + WINDOW_MS
    assert not follower.may_post(m, [seen[-1]], quiet, WINDOW_MS)  # our minutes: too soon
    assert not follower.may_post(m, [seen[-1]], last + theirs, WINDOW_MS)  # its next is due
    gone = last + TAKEOVER_EPOCHS * (theirs - WINDOW_MS) + WINDOW_MS
    assert follower.may_post(m, [seen[-1]], gone, WINDOW_MS)
    for i in range(11, 11 + 2 * CADENCE_ANCHORS):  # a gap in the indexes says nothing
        follower.may_post(m, [ChainAnchor(i * 2, THEM, b"", b"", "final", i * theirs)], 0, 0)
    assert len(follower.posted) == CADENCE_ANCHORS and follower.cadence_ms() == 0
