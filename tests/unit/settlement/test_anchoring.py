"""The anchorer's machine: inputs in, effects out; no chain, no clock."""

from __future__ import annotations

import pytest

from consensus.errors import Invalid
from consensus.settlement import anchoring, anchoring_state
from consensus.settlement.anchoring import Anchoring, Answer, Finalize, Post, claim_due
from consensus.settlement.epoch import Entry, Spend

R, W1, W2 = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
J1, J2 = b"\x11" * 32, b"\x12" * 32
T = b"\x00" * 32
EPOCH_MS, WINDOW_MS = 60_000, 3_600_000


def machine(epoch_ms: int, fee_bps: int) -> Anchoring:
    """A machine holding a spend of R's that covers any debit here."""
    m = Anchoring(epoch_ms, fee_bps=fee_bps)
    m.on_spend(Spend(R, 2**200, b"spend"))
    return m


def entry(job: bytes, worker: bytes, amount: int) -> Entry:
    return Entry(R, worker, job, T, amount)


def post(m: Anchoring, now: int) -> Post:
    (effect,) = m.on_tick(now)
    assert isinstance(effect, Post) and m.state == "posting"
    return effect


def test_posts_when_due_then_builds_on_the_final_epoch() -> None:
    m = machine(EPOCH_MS, fee_bps=100)
    assert m.on_tick(0) == []  # nothing to anchor
    m.on_voucher(entry(J1, W1, 100), b"s1")
    m.on_voucher(entry(J1, W1, 50), b"old")  # an older voucher changes nothing
    first = post(m, 1000).epoch
    assert first.debits == {R: 100} and m.on_tick(2000) == []  # posting: wait for the chain
    m.on_posted(0, window_end_ms=1000 + WINDOW_MS)
    m.on_voucher(entry(J1, W1, 300), b"s2")
    m.on_voucher(entry(J2, W2, 40), b"s3")
    assert m.on_tick(WINDOW_MS) == []  # window still open
    second = post(m, 1000 + WINDOW_MS).epoch  # final now; the next anchor finalizes it on chain
    assert second.debits == {R: 240}  # only the increases over the final epoch
    # net of the 1 % fee, cumulative: 240 - 2 = 238 split 200:40 -> 198 + 39, the last wei to W1
    assert (second.earnings[W1], second.earnings[W2]) == (99 + 199, 39)
    m.on_posted(1, window_end_ms=2 * WINDOW_MS)
    assert m.on_tick(3 * WINDOW_MS) == [Finalize(1)]  # nothing new: finalize explicitly
    assert m.state == "idle" and m.on_tick(4 * WINDOW_MS) == []


def test_disputes_are_answered_with_the_voucher_of_that_epoch() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    e = entry(J1, W1, 100)
    m.on_voucher(e, b"sig-100")
    post(m, 0)
    m.on_posted(0, window_end_ms=WINDOW_MS)
    m.on_voucher(entry(J1, W1, 200), b"sig-200")  # newer, arrives during the window
    assert m.on_disputed(0, e.leaf()) == [Answer(0, e, b"sig-100")]
    assert m.on_tick(WINDOW_MS + 1) == []  # an open dispute holds the epoch
    m.on_answered(e.leaf())
    (effect,) = m.on_tick(WINDOW_MS + 2)
    assert isinstance(effect, Post) and effect.epoch.debits == {R: 100}  # 200 over 100


def test_a_voided_epoch_is_anchored_again() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"s")
    first = post(m, 0).epoch
    m.on_posted(0, window_end_ms=WINDOW_MS)
    assert m.on_disputed(0, b"\xff" * 32) == []  # not an entry we know: cannot answer
    m.on_voided(0)
    again = post(m, EPOCH_MS).epoch
    assert again.entries_tree.root == first.entries_tree.root  # built on the same base


def test_post_failure_and_bugs() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 1), b"s")
    post(m, 0)
    m.on_post_failed()
    assert m.state == "idle"
    with pytest.raises(RuntimeError, match="bug"):
        m.on_posted(0, 1)
    with pytest.raises(RuntimeError, match="bug"):
        m.on_answered(b"")


def test_claim_policy() -> None:
    assert claim_due(final_cumulative=150, claimed=50, threshold_wei=100)
    assert not claim_due(final_cumulative=149, claimed=50, threshold_wei=100)
    assert not claim_due(final_cumulative=50, claimed=50, threshold_wei=0)


def test_a_cap_lowers_a_line_and_keeps_it_down() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 900), b"sig-900")  # the lost worker's last voucher
    m.cap(entry(J1, W1, 600), b"sig-600")  # the requester: owed to its checkpoint only
    with pytest.raises(Invalid, match="capped"):
        m.on_voucher(entry(J1, W1, 950), b"sig-950")
    m.on_voucher(entry(J1, W1, 500), b"sig-500")  # a smaller one changes nothing
    epoch = post(m, 0).epoch
    assert epoch.debits == {R: 600}
    assert m.signatures[entry(J1, W1, 600).leaf()] == b"sig-600"  # answers a dispute


def test_a_cap_alone_pays_the_line_and_a_zero_cap_pays_nothing() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.cap(entry(J1, W1, 300), b"sig-300")  # the lost worker never handed in its voucher
    m.cap(entry(J2, W2, 0), b"")
    with pytest.raises(Invalid):
        m.on_voucher(entry(J2, W2, 10), b"sig-10")
    assert post(m, 0).epoch.debits == {R: 300}


def test_a_cap_never_lowers_what_an_epoch_anchored() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 900), b"sig-900")
    post(m, 0)
    m.on_posted(0, window_end_ms=WINDOW_MS)
    m.on_tick(WINDOW_MS)  # final: 900 is paid
    m.cap(entry(J1, W1, 600), b"sig-600")  # too late
    assert m.caps[entry(J1, W1, 600).line] == 900
    assert not [e for e in m.on_tick(WINDOW_MS + EPOCH_MS) if isinstance(e, Post)]
    assert anchoring_state.load(anchoring_state.dump(m)).caps == m.caps  # survives a restart


def test_a_requester_whose_spend_falls_short_waits_for_a_later_epoch() -> None:
    m = Anchoring(EPOCH_MS, fee_bps=0)
    r2 = b"\x09" * 20
    m.on_voucher(entry(J1, W1, 100), b"s1")
    m.on_voucher(Entry(r2, W2, J2, T, 40), b"s2")
    assert m.to_post(0) == {R, r2}
    assert m.on_tick(0) == [] and m.short == {R: 100, r2: 40}  # no spend held: nothing
    m.on_spend(Spend(R, 100, b"R100"))
    m.on_spend(Spend(R, 90, b"R90"))  # a smaller one changes nothing
    m.on_spend(Spend(r2, 40, b"r2-40"))
    (effect,) = m.on_tick(1, debited={r2: 1})  # the chain shows r2 debited by another anchorer
    assert isinstance(effect, Post) and effect.epoch.debits == {R: 100}
    assert effect.spends == {R: Spend(R, 100, b"R100")} and m.short == {r2: 41}
    m.on_posted(0, window_end_ms=WINDOW_MS)
    assert m.to_post(WINDOW_MS - 1) == set()  # the window is open
    m.on_voucher(entry(J1, W1, 150), b"s3")
    assert m.to_post(WINDOW_MS) == {R, r2}
    (effect,) = m.on_tick(WINDOW_MS)  # R: 100 anchored + 50 over the 100 signed; r2 covered
    assert isinstance(effect, Post) and effect.epoch.debits == {r2: 40} and m.short == {R: 150}


def test_an_epoch_holds_at_most_max_party_lines_per_party(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sum dispute's answer carries all of a party's entries: the rest wait an epoch."""
    monkeypatch.setattr(anchoring, "MAX_PARTY_LINES", 2)
    m = Anchoring(epoch_ms=1000, fee_bps=0)
    for i in range(3):
        m.on_voucher(Entry(R, W1, bytes([i + 1]) * 32, T, 10), b"s")
    m.on_voucher(Entry(R, W2, b"\x09" * 32, T, 10), b"s")
    m.on_spend(Spend(R, 10**18, b"sig"))
    (post,) = m.on_tick(0)
    assert isinstance(post, Post)
    assert len(post.epoch.entries) == 2  # the requester's two: its third line and W2's wait


def final_epoch(m: Anchoring, now: int, index: int) -> Post:
    """Posts what is due at ``now`` as epoch ``index`` and lets its window pass."""
    effect = post(m, now)
    m.on_posted(index, window_end_ms=now + WINDOW_MS)
    m.on_tick(now + WINDOW_MS, may_post=False)  # final in our eyes: the base
    return effect


def test_lines_anchored_in_full_are_let_go_and_come_back_as_their_base() -> None:
    """Memory holds open lines only; a line let go and restored is never paid twice."""
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"s1")
    final_epoch(m, 0, 0)
    m.on_voucher(entry(J2, W2, 40), b"s2")  # open: not anchored yet
    settled = m.settled()
    assert settled == [entry(J1, W1, 100)]
    assert m.settle(e.line for e in settled) == 1
    assert set(m.latest) == {entry(J2, W2, 40).line} and m.base_lines == {}
    assert m._anchored(R) == 100  # what was debited is not forgotten with the lines
    m.restore(entry(J1, W1, 100))  # the driver found it kept: a voucher names it again
    m.on_voucher(entry(J1, W1, 100), b"s1")  # a resend: nothing new
    m.on_voucher(entry(J1, W1, 300), b"s3")
    epoch = final_epoch(m, WINDOW_MS + EPOCH_MS, 1).epoch
    assert epoch.debits == {R: 240}  # 200 more on the line, and the new one's 40
    assert {e.line: e.previous for e in epoch.entries}[entry(J1, W1, 0).line] == 100


def test_a_line_that_grew_while_it_was_kept_stays() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"s1")
    final_epoch(m, 0, 0)
    settled = m.settled()
    m.on_voucher(entry(J1, W1, 150), b"s2")  # arrives while the driver writes the bases
    assert m.settle(e.line for e in settled) == 0
    assert m.base_lines == {entry(J1, W1, 0).line: 100}  # the next entry's previous


def test_while_an_epoch_of_ours_is_pending_only_lines_outside_it_are_let_go() -> None:
    """A busy anchorer posts again as soon as an epoch is final: it is seldom idle, so lines
    go while an epoch is pending too, but never one that epoch grows, even if its voucher
    fell back (a failed verification: forget) while the epoch waited."""
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"s1")
    m.on_voucher(entry(J1, W2, 100), b"s2")
    final_epoch(m, 0, 0)
    m.on_voucher(entry(J1, W2, 130), b"s3")
    post(m, WINDOW_MS + EPOCH_MS)
    m.forget(entry(J1, W2, 0).line)  # back to its base while the epoch that grows it waits
    assert m.settled() == [entry(J1, W1, 100)]
    assert m.settle([entry(J1, W1, 0).line, entry(J1, W2, 0).line]) == 1
    assert m.pending is not None and entry(J1, W1, 0).line not in m.pending.lines
    m.on_posted(1, window_end_ms=3 * WINDOW_MS)
    # A let-go line restored while an epoch is pending is in the base that epoch becomes.
    m.restore(entry(J2, W1, 70))
    m.on_voucher(entry(J2, W1, 90), b"s4")
    m.on_tick(3 * WINDOW_MS, may_post=False)
    assert m.base_lines == {entry(J1, W2, 0).line: 130, entry(J2, W1, 0).line: 70}
    assert m.settled() == [entry(J1, W2, 130)], "final now: let go at what the chain holds"
    (effect,) = m.on_tick(3 * WINDOW_MS)
    assert isinstance(effect, Post) and effect.epoch.debits == {R: 20}


def test_an_adopted_epochs_lines_can_be_let_go() -> None:
    """A standing-by anchorer that never heard a line's voucher knows its requester from the
    epoch it adopts, so the line is kept and let go like its own."""
    other = machine(EPOCH_MS, fee_bps=0)
    other.on_voucher(entry(J1, W1, 100), b"s1")
    epoch = post(other, 0).epoch
    m = machine(EPOCH_MS, fee_bps=0)
    m.adopt(0, epoch)
    assert m.settled() == [entry(J1, W1, 100)] and m._anchored(R) == 100


def test_a_saved_machine_keeps_what_was_anchored_and_reads_the_older_form() -> None:
    m = machine(EPOCH_MS, fee_bps=0)
    m.on_voucher(entry(J1, W1, 100), b"s1")
    final_epoch(m, 0, 0)
    m.settle(e.line for e in m.settled())
    doc = anchoring_state.dump(m)
    assert anchoring_state.load(doc).anchored == {R: 100}
    m.on_voucher(entry(J2, W2, 40), b"s2")
    m.base_lines[entry(J2, W2, 0).line] = 30  # as a version 2 machine held every line
    older = {**anchoring_state.dump(m), "v": 2}
    del older["anchored"]
    assert anchoring_state.load(older).anchored == {R: 30}
