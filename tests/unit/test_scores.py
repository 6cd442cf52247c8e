"""Peer scores: penalties, recovery over time, bans and their expiry, a bounded table."""

from __future__ import annotations

from consensus.scores import PeerScores, Penalised, ScoreParams

PARAMS = ScoreParams(reject_penalty=10, ban_threshold=-30, recovery_per_s=1, ban_ms=60_000)


def test_penalty_and_recovery() -> None:
    scores = PeerScores(PARAMS)
    assert scores.penalise("A", "garbage", 0) == Penalised("A", -10, False, "garbage")
    assert scores.score("A", 5_000) == -5
    assert scores.score("A", 10_000) == 0
    assert scores.score("A", 99_000) == 0  # never above zero: good behaviour earns no credit
    assert scores.last_reason("A") == "garbage"
    assert scores.score("B", 0) == 0


def test_ban_starts_once_and_expires() -> None:
    scores = PeerScores(PARAMS)
    outcomes = [scores.penalise("A", "x", t) for t in (0, 1, 2, 3)]
    assert [o.banned for o in outcomes] == [False, False, True, False]  # only the crossing bans
    assert scores.banned("A", 2) and scores.banned("A", 60_001)
    assert not scores.banned("A", 60_002)


def test_table_is_bounded_by_forgetting_recovered_peers() -> None:
    scores = PeerScores(ScoreParams(max_peers=2, recovery_per_s=1))
    scores.penalise("A", "x", 0)
    scores.penalise("B", "x", 0)
    scores.penalise("C", "x", 60_000)  # A and B recovered by now: forgotten to make room
    assert scores.score("C", 60_000) < 0
    assert len(scores._peers) == 1
