"""The worker's judgement of requesters whose lines no anchor takes (pure)."""

from __future__ import annotations

from consensus.settlement.arrears import Line, in_arrears

R, R2 = "0x" + "aa" * 20, "0x" + "bb" * 20


def line(amount: int, anchors: int, debited: int = 10, *, shown: int = 0, requester: str = R,
         peer: str = "p") -> Line:  # fmt: skip
    return Line(requester, peer, amount, shown, anchors, debited)


def test_a_requester_left_out_of_enough_anchors_is_in_arrears() -> None:
    lines = [line(5, 1), line(7, 2, peer="q"), line(9, 1, requester=R2)]
    got = in_arrears(lines, {R: 10, R2: 11}, anchors=4, patience=2)
    assert list(got) == [R], "R2 was debited since its line's snapshot"
    assert got[R].peers == {"p", "q"} and (got[R].waiting_wei, got[R].anchors) == (12, 3)
    assert R in got[R].reason() and "12 wei" in got[R].reason()


def test_within_patience_or_debited_since_is_fine() -> None:
    assert in_arrears([line(5, 1)], {R: 10}, anchors=2, patience=2) == {}  # 1 anchor since
    assert in_arrears([line(5, 1)], {R: 11}, anchors=9, patience=2) == {}  # debited since
    assert in_arrears([line(5, 1)], {R: 10}, anchors=9, patience=0) == {}  # turned off
    assert in_arrears([line(5, 1)], {}, anchors=9, patience=1) == {}  # pool not read


def test_only_lines_whose_snapshot_predates_the_debit_are_cleared() -> None:
    # an older line's window saw the debit to 12; a newer line's snapshot was taken after it
    lines = [line(5, 1, 10), line(4, 3, 12)]
    got = in_arrears(lines, {R: 12}, anchors=6, patience=3)[R]
    assert (got.waiting_wei, got.anchors) == (4, 3)


def test_shown_lines_are_not_judged_and_partly_shown_count_the_rest() -> None:
    assert in_arrears([line(5, 0, shown=5)], {R: 10}, anchors=9, patience=1) == {}
    assert in_arrears([line(5, 0, shown=2)], {R: 10}, anchors=3, patience=1)[R].waiting_wei == 3


def test_a_void_lowering_the_debit_does_not_count_as_a_debit() -> None:
    assert R in in_arrears([line(5, 1, 10)], {R: 7}, anchors=5, patience=2)
