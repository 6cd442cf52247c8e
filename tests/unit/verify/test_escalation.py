"""Escalation of a cross-class miss: the message and its checks, who answers, the answer's
game, what may back a slash, and what the requester decides without an answer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import nacl.signing
import pytest

from consensus.envelope import seal
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.peer_id import peer_id_from_public_key
from consensus.verify import escalation as esc
from consensus.verify import game as g
from consensus.verify.messages import Escalation, Miss, verify_registry
from p2p.validation import EnvelopeValidator, Verdict
from tests.unit.verify.factories import att_id, honest

RUN = honest(8)
ATT = RUN.attestation()  # det_class "cpu/torch-2"
NOW = 10**12
TOPIC = "/idlegrid/1/escalations"


def escalated(run: Any = RUN, misses: tuple[int, ...] = (5,)) -> g.Escalate:
    """A cross-class game over segments 3, 5, 7 that missed on ``misses``."""
    game = g.Game(run.attestation(), att_id(run), [3, 5, 7], 1000, False, 500)
    game.start()
    out: list[g.Effect] = []
    for i in (3, 5, 7):
        game.handle(g.Answered(run.answer(i)), 1)
        out += game.handle(g.Replayed(i, b"m" * 32 if i in misses else run.hashes[i]), 2)
    [up] = out
    assert isinstance(up, g.Escalate)
    return up


def message(**changes: Any) -> Escalation:
    made = esc.escalation_of(
        ATT, att_id(RUN), escalated(), det_class="gpu/h100", seed=b"s" * 32, sampled=[3, 5, 7],
        tolerance_ppm=500, expires_ms=NOW + 60_000, nonce=b"n" * 16,
    )  # fmt: skip
    return replace(made, **changes)


def test_the_message_carries_the_misses_and_survives_the_wire() -> None:
    m = message()
    assert [x.index for x in m.misses] == [5] and m.misses[0].claimed == RUN.hashes[5]
    assert m.misses[0].replayed == b"m" * 32 and m.misses[0].distance_ppm is None
    assert m.evidence == g.evidence_hash(escalated().evidence)
    assert "segments 5 (no distance)" in m.reason
    assert from_wire(Escalation, to_wire(m)) == m


MISS = Miss(index=5, distance_ppm=None, replayed=b"m" * 32, claimed=b"c" * 32)


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"det_class": ""}, "escalation.det_class", "1 to 200"),
        ({"tolerance_ppm": -1}, "escalation.tolerance_ppm", "not in"),
        ({"misses": []}, "escalation.misses", "at least one"),
        ({"misses": [MISS, MISS]}, "escalation.misses", "each segment once"),
        ({"misses": [replace(MISS, index=4)]}, "escalation.misses", "not all among sampled"),
        (
            {"misses": [replace(MISS, replayed=b"c" * 32)]},
            "escalation.misses[0].replayed",
            "no miss",
        ),
        (
            {"misses": [replace(MISS, distance_ppm=500)]},
            "escalation.misses[0].distance_ppm",
            "over 500",
        ),
    ],
)
def test_a_contradictory_escalation_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, why: str
) -> None:
    with pytest.raises(Invalid) as caught:
        message(**changes)
    assert caught.value.what == field and why in caught.value.reason


def test_gossip_accepts_a_good_escalation_and_rejects_a_bad_one() -> None:
    key = nacl.signing.SigningKey(b"k" * 32)
    origin = peer_id_from_public_key(bytes(key.verify_key))
    check = EnvelopeValidator(verify_registry(), {TOPIC: frozenset({Escalation.KIND})},
                              clock=lambda: NOW)  # fmt: skip
    good = to_wire(message())
    assert check(TOPIC, origin, seal(key, Escalation.KIND, good)).verdict is Verdict.ACCEPT
    within = good | {"nonce": b"o" * 16, "misses": [good["misses"][0] | {"distance_ppm": 10}]}
    got = check(TOPIC, origin, seal(key, Escalation.KIND, within))
    assert got.verdict is Verdict.REJECT and "distance_ppm" in got.reason


def test_a_node_checks_an_escalation_against_the_attestation_it_heard() -> None:
    good = message()
    assert esc.check_escalation(good, ATT, from_sentry=True) == esc.ACCEPT
    ignored = [
        esc.check_escalation(good, ATT, from_sentry=False),
        esc.check_escalation(good, None, from_sentry=True),
    ]
    assert [c.action for c in ignored] == ["ignore", "ignore"]
    rejected = [
        esc.check_escalation(replace(good, worker="x"), ATT, True),
        esc.check_escalation(replace(good, det_class=ATT.det_class), ATT, True),
        esc.check_escalation(replace(good, sampled=[3, 5, 8]), ATT, True),
    ]
    assert [c.action for c in rejected] == ["reject"] * 3
    assert "same determinism class" in rejected[1].reason and "[8]" in rejected[2].reason


def refusal(my_class: str = ATT.det_class, **changes: Any) -> str:
    args: dict[str, Any] = {"assigned": False, "answered": False, "heard_ms": 0,
                            "now_ms": 999, "timeout_ms": 1000} | changes  # fmt: skip
    return esc.answer_refusal(ATT, {my_class}, **args)


def test_only_an_unassigned_same_class_sentry_answers_once_in_time() -> None:
    assert refusal() == ""
    assert "another determinism class" in refusal("gpu/h100")
    assert "assigned" in refusal(assigned=True)
    assert "already" in refusal(answered=True)
    assert "too late" in refusal(now_ms=1000)


def test_the_answer_replays_the_missed_segments_bitwise() -> None:
    up = message(misses=[replace(MISS, index=7), MISS])
    game = esc.second_game(ATT, att_id(RUN), up, 1000, 500)
    assert game.sampled == [5, 7] and game.same_class
    game.start()
    game.handle(g.Answered(RUN.answer(5)), 1)
    [again] = game.handle(g.Replayed(5, b"x" * 32), 2)
    assert isinstance(again, g.Replay) and again.again
    [fail] = game.handle(g.Replayed(5, b"x" * 32), 3)
    assert isinstance(fail, g.Decide) and not fail.passed and fail.grounds == "replay"
    reason = esc.answer_reason(up, fail)
    assert reason.startswith("same-class replay of escalated segments [5, 7]: segment 5")


def test_a_cross_class_replay_never_backs_a_slash() -> None:
    fail = g.Decide(False, "r", b"", "replay")
    assert not esc.slashable(fail, same_class=False)
    assert esc.slashable(fail, same_class=True)
    for grounds in ("answer", "silence"):  # hold in every class
        assert esc.slashable(replace(fail, grounds=grounds), same_class=False)  # type: ignore[arg-type]
    assert not esc.slashable(g.Decide(True, "", b""), same_class=True)


def test_without_an_answer_an_escalated_attempt_is_accepted_saying_why() -> None:
    assert esc.on_timeout([], 5000) == ("unverified", "no verdict within 5000 ms")
    outcome, why = esc.on_timeout([("12D3KooWsentryA", "cross-class replay over ...")], 5000)
    assert outcome == "accepted" and why.startswith(esc.NO_SAME_CLASS)
    assert "sentryA" in why
