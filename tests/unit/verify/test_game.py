"""The sentry's game, driven by events: honest runs pass, each kind of cheat fails."""

from __future__ import annotations

from dataclasses import replace

from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from consensus.kinds import from_wire, to_wire
from consensus.verify import escalation as esc
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import ChallengeRequest, ChallengeResponse, Leaf
from tests.unit.verify.factories import Run, att_id, honest

DEADLINE = 1000


def new_game(run: Run, sampled: list[int], same_class: bool = True, att: object = None) -> g.Game:
    attestation = att or run.attestation()
    return g.Game(attestation, att_id(run), sampled, DEADLINE, same_class, tolerance_ppm=500)  # type: ignore[arg-type]


def play(game: g.Game, run: Run, replay_hashes: dict[int, bytes] | None = None) -> list[g.Effect]:
    """Answers every challenge from ``run`` and replays honestly unless told otherwise."""
    out: list[g.Effect] = []
    for effect in game.start():
        assert isinstance(effect, g.Challenge) and effect.deadline_ms == DEADLINE
        todo = game.handle(g.Answered(run.answer(effect.index)), 10)
        while todo:  # a missed replay asks for a second one: the sentry's replays agree
            e = todo.pop(0)
            out.append(e)
            if isinstance(e, g.Replay):
                got = (replay_hashes or {}).get(e.index, e.expected)
                todo += game.handle(g.Replayed(e.index, got), 20)
    return out


def decision(effects: list[g.Effect]) -> g.Decide:
    [d] = [e for e in effects if isinstance(e, g.Decide)]
    return d


@given(st.integers(1, 40), st.data())
def test_honest_runs_always_pass(n: int, data: st.DataObject) -> None:
    run = honest(n)
    sampled = sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=6))) | {n - 1})
    game = new_game(run, sampled)
    d = decision(play(game, run))
    assert d.passed and game.state == "passed"
    assert game.next_deadline() is None


def test_replay_from_checkpoint_is_given_the_start_file() -> None:
    run = honest(4)
    game = new_game(run, [2, 3])
    game.start()
    [replay] = game.handle(g.Answered(run.answer(2)), 5)
    assert replay == g.Replay(2, run.files[1], run.hashes[2])


def test_a_skipped_segment_fails_on_replay_in_the_same_class() -> None:
    run = honest(8)
    game = new_game(run, [3, 7])
    d = decision(play(game, run, {3: b"x" * 32}))
    assert not d.passed and "segment 3: replay gives" in d.reason
    assert game.state == "failed"


def test_a_job_whose_replays_disagree_is_unverifiable_not_a_fail() -> None:
    run = honest(8)
    game = new_game(run, [3, 5, 7])
    game.start()
    [first] = game.handle(g.Answered(run.answer(3)), 5)
    [again] = game.handle(g.Replayed(3, b"x" * 32), 6)  # a miss: replayed once more
    assert again == replace(first, again=True) and game.state == "challenging"
    assert game.handle(g.Replayed(3, b"y" * 32), 7) == [], "replays disagree: the others decide"
    game.handle(g.Answered(run.answer(5)), 8)
    [_again] = game.handle(g.Replayed(5, b"z" * 32), 9)
    assert game.handle(g.Replayed(5, run.hashes[5]), 10) == [], "the first replay was the odd one"
    [_replay] = game.handle(g.Answered(run.answer(7)), 11)
    [d] = game.handle(g.Replayed(7, run.hashes[7]), 12)
    assert isinstance(d, g.Decide) and d.passed and d.grounds == "unsteady"
    assert d.reason == (
        "unverifiable: the job is not deterministic (two replays of segment 3 differ, "
        "and of 1 more)"
    )
    assert g.unverifiable(d.passed, d.reason) and not g.unverifiable(False, d.reason)
    assert not esc.slashable(d, same_class=True)


def test_an_unsteady_job_still_fails_a_cheat_the_answers_show() -> None:
    run = honest(8)
    game = new_game(run, [3, 5])
    game.start()
    game.handle(g.Answered(run.answer(3)), 5)
    game.handle(g.Replayed(3, b"x" * 32), 6)
    game.handle(g.Replayed(3, b"y" * 32), 7)  # unsteady
    [d] = game.handle(g.Answered(replace(run.answer(5), checkpoint=b"not the file")), 8)
    assert isinstance(d, g.Decide) and not d.passed and d.grounds == "answer"


def test_a_cross_class_miss_escalates_rather_than_fails() -> None:
    run = honest(8)
    game = new_game(run, [3, 5, 7], same_class=False)
    game.start()
    [_first] = game.handle(g.Answered(run.answer(3)), 5)
    assert game.handle(g.Replayed(3, b"y" * 32, distance_ppm=100), 6) == []  # within tolerance
    [_replay] = game.handle(g.Answered(run.answer(5)), 7)
    assert game.handle(g.Replayed(5, b"z" * 32, distance_ppm=9000), 8) == [], "replays go on"
    assert game.state == "challenging"
    [_replay] = game.handle(g.Answered(run.answer(7)), 9)
    [up] = game.handle(g.Replayed(7, b"w" * 32), 10)  # no distance from the runtime: a miss
    assert isinstance(up, g.Escalate) and game.state == "escalated"
    assert up.misses == (
        g.Missed(5, 9000, b"z" * 32, run.hashes[5]),
        g.Missed(7, None, b"w" * 32, run.hashes[7]),
    )
    assert "segments 5 (9000 ppm), 7 (no distance)" in up.reason
    assert game.handle(g.Answered(run.answer(7)), 11) == []  # terminal: late input ignored


def test_a_cross_class_game_still_fails_on_class_independent_grounds() -> None:
    run = honest(8)
    game = new_game(run, [3, 5], same_class=False)
    game.start()
    game.handle(g.Answered(run.answer(3)), 5)
    assert game.handle(g.Replayed(3, b"y" * 32), 6) == []  # a miss, noted
    forged = replace(run.answer(5), checkpoint=b"not the file")
    [d] = game.handle(g.Answered(forged), 7)
    assert isinstance(d, g.Decide) and not d.passed and d.grounds == "answer"
    assert game.state == "failed"


def test_each_decision_names_its_grounds() -> None:
    run = honest(4)
    assert decision(play(new_game(run, [3]), run)).grounds == "replays"
    assert decision(play(new_game(run, [3]), run, {3: b"x" * 32})).grounds == "replay"
    game = new_game(run, [3])
    game.start()
    [silent] = game.on_tick(DEADLINE)
    assert isinstance(silent, g.Decide) and silent.grounds == "silence"


def test_silence_fails_at_the_deadline() -> None:
    run = honest(4)
    game = new_game(run, [1, 3])
    game.start()
    game.handle(g.Answered(run.answer(1)), 5)
    assert game.on_tick(DEADLINE - 1) == []
    assert game.next_deadline() == DEADLINE
    [d] = game.on_tick(DEADLINE)
    assert isinstance(d, g.Decide) and not d.passed and "[3]" in d.reason
    assert game.handle(g.Answered(run.answer(3)), DEADLINE + 1) == []


def test_refusal_fails() -> None:
    run = honest(4)
    game = new_game(run, [3])
    game.start()
    [d] = game.handle(g.Refused(3, "busy"), 5)
    assert isinstance(d, g.Decide) and not d.passed and "refused" in d.reason


def test_a_late_answer_counts_as_silence() -> None:
    run = honest(4)
    game = new_game(run, [3])
    game.start()
    [d] = game.handle(g.Answered(run.answer(3)), DEADLINE + 1)
    assert isinstance(d, g.Decide) and not d.passed


def cheat(run: Run, index: int, **changes: object) -> g.Decide:
    game = new_game(run, [index])
    game.start()
    answer = replace(run.answer(index), **changes)  # type: ignore[arg-type]
    [d] = game.handle(g.Answered(answer), 5)
    assert isinstance(d, g.Decide) and not d.passed
    return d


def test_answers_that_do_not_match_the_attestation_fail() -> None:
    run = honest(6)
    leaves = run.leaves()
    wrong_file = cheat(run, 3, checkpoint=b"another state")
    assert "does not match its attested hash" in wrong_file.reason
    forged = Leaf(index=3, hash=b"f" * 32, chained=leaves[3].chained)
    assert "not under the attested root" in cheat(run, 3, after=forged).reason
    moved = Leaf(index=3, hash=leaves[4].hash, chained=leaves[4].chained)
    assert "not under the attested root" in cheat(run, 3, after=moved).reason
    assert "leaf is missing" in cheat(run, 3, before=None).reason


def test_reordered_checkpoints_break_the_chain() -> None:
    run = honest(6)
    files = list(run.files)
    files[2], files[3] = files[3], files[2]
    # The worker attests the reordered files honestly hashed: a consistent tree of a history
    # no replay reproduces. The chain holds, so the replay is what catches it.
    reordered = Run(files)
    game = new_game(reordered, [3])
    game.start()
    [_replay] = game.handle(g.Answered(reordered.answer(3)), 5)
    real = blake3(files[3]).digest()  # not what segment 3 from files[2] gives honestly
    replayed = g.Replayed(3, run.hashes[3] if real != run.hashes[3] else b"q" * 32)
    [again] = game.handle(replayed, 6)
    assert isinstance(again, g.Replay) and again.again, "a miss is replayed once more"
    [d] = game.handle(replayed, 7)
    assert isinstance(d, g.Decide) and not d.passed


def test_a_chain_that_breaks_between_leaves_fails() -> None:
    run = honest(6)
    leaves = run.leaves()
    # A tree over leaves whose chained hashes were not computed from their state hashes.
    bad = [leaves[0], leaves[1], Leaf(index=2, hash=b"h" * 32, chained=leaves[2].chained)]
    levels = tree.levels(bad)
    att = run.attestation(root=levels[-1][0], segments=3, result_hash=bad[2].hash)
    game = new_game(run, [2], att=att)
    game.start()
    answer = replace(
        run.answer(2), before_proof=tree.proof(levels, 1), after=bad[2],
        after_proof=tree.proof(levels, 2),
    )  # fmt: skip
    [d] = game.handle(g.Answered(answer), 5)
    assert isinstance(d, g.Decide) and "chain breaks" in d.reason


def test_a_result_other_than_the_final_state_fails() -> None:
    run = honest(4)
    game = new_game(run, [3], att=run.attestation(result_hash=b"r" * 32))
    game.start()
    [d] = game.handle(g.Answered(run.answer(3)), 5)
    assert isinstance(d, g.Decide) and "not the attested result" in d.reason


def test_evidence_is_kept_and_hashed() -> None:
    run = honest(8)
    d = decision(play(new_game(run, [3, 7]), run, {3: b"x" * 32}))
    assert len(g.evidence_hash(d.evidence)) == 32
    assert b"replayed" in d.evidence and b"x" * 32 in d.evidence


def test_transition_table_covers_every_move() -> None:
    for (state, _event), targets in g.TRANSITIONS.items():
        assert state not in g.TERMINAL and targets


def test_a_cross_class_replay_is_given_the_end_file_and_passes_within_tolerance() -> None:
    run = honest(4)
    game = new_game(run, [2, 3], same_class=False)
    game.start()
    [replay] = game.handle(g.Answered(run.answer(2, with_end=True)), 5)
    assert replay == g.Replay(2, run.files[1], run.hashes[2], end=run.files[2])
    assert game.handle(g.Replayed(2, b"y" * 32, distance_ppm=500), 6) == []  # at tolerance
    game.handle(g.Answered(run.answer(3, with_end=True)), 7)
    [d] = game.handle(g.Replayed(3, b"z" * 32, distance_ppm=0), 8)
    assert isinstance(d, g.Decide) and d.passed and game.state == "passed"


def test_a_same_class_replay_ignores_an_end_file_it_did_not_need() -> None:
    run = honest(4)
    game = new_game(run, [2])
    game.start()
    [replay] = game.handle(g.Answered(run.answer(2, with_end=True)), 5)
    assert replay == g.Replay(2, run.files[1], run.hashes[2])


def test_an_end_file_that_is_not_the_attested_state_fails_in_any_class() -> None:
    run = honest(4)
    for same_class in (True, False):
        game = new_game(run, [2], same_class=same_class)
        game.start()
        forged = replace(run.answer(2), end_checkpoint=b"a state near the replay's")
        [d] = game.handle(g.Answered(forged), 5)
        assert isinstance(d, g.Decide) and not d.passed and d.grounds == "answer"
        assert "end checkpoint file does not match" in d.reason


def test_the_evidence_names_the_end_file_by_its_hash() -> None:
    run = honest(4)
    game = new_game(run, [2], same_class=False)
    game.start()
    forged = replace(run.answer(2), end_checkpoint=b"x" * 5000)
    [d] = game.handle(g.Answered(forged), 5)
    assert isinstance(d, g.Decide) and len(d.evidence) < 2000
    assert blake3(b"x" * 5000).digest() in d.evidence


def test_peers_that_predate_the_end_file_still_understand_each_other() -> None:
    run = honest(4)
    old_answer = to_wire(run.answer(2))
    del old_answer["end_checkpoint"]
    assert from_wire(ChallengeResponse, old_answer).end_checkpoint == b""
    request = ChallengeRequest(ref=run.answer(2).ref, attestation=att_id(run), index=2)
    old_request = to_wire(request)
    del old_request["with_end"]
    assert from_wire(ChallengeRequest, old_request) == request
