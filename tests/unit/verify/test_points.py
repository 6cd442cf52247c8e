"""Replays that stop at a point inside a segment: the game's side (consensus.verify.game).

A run here has 4 segments of 4 points each; point ``j`` of segment ``i`` is the state string
``"i.j"``, its end point 4 the checkpoint file. A replay is simulated by the honest state
function, so what is checked is the game: which hash a stopped replay is compared to, and the
checks on the point hashes a worker sends.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from blake3 import blake3

from consensus.market.messages import Workload
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import Attestation, ChallengeResponse, attestation_id
from consensus.verify.sampling import sample, stops
from node.verify.play import stop_step, stops_of
from tests.unit.verify.factories import REF

M = 4


def state(i: int, j: int) -> bytes:
    return f"state {i}.{j}".encode() * 8


def digest(data: bytes) -> bytes:
    return blake3(data).digest()


class PointedRun:
    """An honest run with points; ``faked`` maps a segment to its first faked point: the
    worker's states from there on (its end included) are not the honest ones."""

    def __init__(self, n: int = 4, faked: dict[int, int] | None = None) -> None:
        self.n, self.faked = n, faked or {}

    def claimed(self, i: int, j: int) -> bytes:
        return b"faked " + state(i, j) if j >= self.faked.get(i, M + 1) else state(i, j)

    def points(self, i: int) -> list[bytes]:
        return [digest(self.claimed(i, j)) for j in range(1, M)]

    def leaves(self) -> list[tree.Leaf]:
        hashes = [digest(self.claimed(i, M)) for i in range(self.n)]
        return tree.chain_leaves(hashes, points=[self.points(i) for i in range(self.n)])

    def attestation(self) -> Attestation:
        leaves = self.leaves()
        return Attestation(
            expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker="w", root=tree.root(leaves),
            segments=self.n, result_hash=leaves[-1].hash, seconds=60, runtime="train",
            det_class="cpu", points=M,
        )  # fmt: skip

    def answer(self, i: int) -> ChallengeResponse:
        leaves, levels = self.leaves(), tree.levels(self.leaves())
        return ChallengeResponse(
            ref=REF, index=i, before=leaves[i - 1] if i else None,
            before_proof=tree.proof(levels, i - 1) if i else [], after=leaves[i],
            after_proof=tree.proof(levels, i),
            checkpoint=self.claimed(i - 1, M) if i else b"", points=self.points(i),
        )  # fmt: skip


def play(run: PointedRun, stops: dict[int, int], answer: ChallengeResponse | None = None) -> Any:
    """The game over segments 1 and 3 (the final), replaying honestly; its decision and the
    replays it asked for."""
    att = run.attestation()
    game = g.Game(att, attestation_id(att), [1, 3], 10_000, True, 1000, stops=stops)
    game.start()
    asked: list[g.Replay] = []
    for i in (1, 3):
        got = answer if answer is not None and answer.index == i else run.answer(i)
        todo = game.handle(g.Answered(got), 0)
        while todo:  # a missed replay asks for a second one: the sentry's replays agree
            effect = todo.pop(0)
            if isinstance(effect, g.Decide):
                return effect, asked
            assert isinstance(effect, g.Replay)
            asked.append(effect)
            point = effect.stop or M
            todo += game.handle(g.Replayed(i, digest(state(i, point))), 0)
    raise AssertionError("no decision")


def test_a_replay_stops_at_its_point_and_compares_that_points_hash() -> None:
    decision, asked = play(PointedRun(), {1: 2, 3: M})
    assert decision.passed
    assert [(r.index, r.stop) for r in asked] == [(1, 2), (3, 0)]  # the final one whole
    assert asked[0].expected == digest(state(1, 2))


def test_a_fake_after_the_stop_is_missed_and_at_or_before_it_caught() -> None:
    run = PointedRun(faked={1: 3})  # segment 1 honest to point 2, its last parts faked
    assert play(run, {1: 2})[0].passed  # the price of points: this sample misses it
    for stop in (3, M):
        decision, _ = play(run, {1: stop})
        assert not decision.passed and decision.grounds == "replay"
    assert "segment 1 at point 3 of 4" in play(run, {1: 3})[0].reason


def test_point_hashes_that_do_not_match_the_leaf_fail_the_answer() -> None:
    run = PointedRun()
    forged = replace(run.answer(1), points=[digest(b"other")] * (M - 1))
    decision, asked = play(run, {1: 1}, forged)
    assert not decision.passed and decision.grounds == "answer" and not asked
    assert "inner point hashes do not match" in decision.reason
    short = replace(run.answer(1), points=run.points(1)[:-1])
    assert "2 inner point hashes, not 3" in play(run, {1: 1}, short)[0].reason


def test_a_cross_class_game_replays_whole_segments() -> None:
    run = PointedRun()
    att = run.attestation()
    game = g.Game(att, attestation_id(att), [1, 3], 10_000, False, 1000, stops={1: 2})
    game.start()
    (effect,) = game.handle(g.Answered(run.answer(1)), 0)
    assert isinstance(effect, g.Replay) and effect.stop == 0
    assert effect.expected == run.leaves()[1].hash


# --- the sentry's side: which stops, which step -------------------------------------------


def test_stops_apply_only_where_they_save_and_map_to_the_runtimes_steps() -> None:
    workload = Workload(kind="train", entry="train.py", steps=400, segments=40)
    att = replace(PointedRun(40).attestation(), workload=workload, points=8)
    seed, sampled = bytes(32), sample(bytes(32), 40, 16)
    got = stops_of(att, seed, sampled)
    assert list(got) == sampled and got[39] == 8  # the final one whole
    assert got == dict(zip(sampled, stops(seed, sampled, 40, 8, 400), strict=True))
    assert stop_step(att, 3, 4) == 35 and stop_step(att, 3, 8) == 40  # steps 30..40
    assert stop_step(att, 3, 0) is None
    assert stops_of(replace(att, points=1), seed, sampled) == {}
    every = sample(seed, 40, 39)  # a short job: every segment sampled, replayed whole
    assert stops_of(att, seed, every) == {}
    other = replace(workload, segments=20)  # a workload that does not match: whole
    assert stops_of(replace(att, workload=other), seed, sampled) == {}
