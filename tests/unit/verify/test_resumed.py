"""Attesting an attempt resumed from another worker's checkpoint: the range tree, the sampling
over the range, the game's checks from the resume point, and the validation of the new fields.

A resumed run here is an honest run of ``n`` segments of which an earlier worker did
``0..first-1``; the resumed worker attests ``first..n-1`` from the checkpoint ``first - 1``.
Its answers come from :func:`node.verify.play.answer_from`, the worker's real answer builder.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import encode
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.market.messages import BlobRef, Checkpoint, TaskOrder, Workload
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import (
    Attestation,
    ChallengeResponse,
    Leaf,
    attestation_id,
    check_resume,
)
from consensus.verify.sampling import guarantee, sample
from node.verify.play import answer_from
from node.verify.worker import _kept
from tests.unit.verify.factories import Run, honest

DEADLINE = 1000


def resumed(run: Run, first: int, **changes: object) -> Attestation:
    """The resumed worker's attestation of ``first..n-1`` of ``run``."""
    full = run.leaves()
    start = full[first - 1]
    leaves = tree.chain_leaves(run.hashes[first:], start.chained, first)
    att = run.attestation(root=tree.root(leaves, first), first=first, start=start)
    return replace(att, **changes)  # type: ignore[arg-type]


def answer(run: Run, att: Attestation, index: int) -> ChallengeResponse:
    return answer_from(att, run.hashes[att.first :], lambda i: run.files[i], index)


def play(run: Run, att: Attestation, sampled: list[int], wrong: int = -1) -> g.Game:
    """Answers every challenge honestly; the replay of segment ``wrong`` differs."""
    game = g.Game(att, attestation_id(att), sampled, DEADLINE, True, 0)
    for challenge in game.start():
        assert isinstance(challenge, g.Challenge)
        todo = game.handle(g.Answered(answer(run, att, challenge.index)), 10)
        while todo:  # a missed replay asks for a second one: the sentry's replays agree
            effect = todo.pop(0)
            if isinstance(effect, g.Replay):
                got = bytes(32) if effect.index == wrong else effect.expected
                todo += game.handle(g.Replayed(effect.index, got), 20)
    return game


# --- tree ----------------------------------------------------------------------------------


@given(st.integers(2, 40), st.data())
def test_range_proofs_verify_and_leaves_outside_the_range_do_not(
    n: int, data: st.DataObject
) -> None:
    run, first = honest(n), data.draw(st.integers(1, n - 1))
    leaves = tree.chain_leaves(run.hashes[first:], run.leaves()[first - 1].chained, first)
    assert leaves == run.leaves()[first:], "the range continues the one history"
    levels = tree.levels(leaves, first)
    root = levels[-1][0]
    i = data.draw(st.integers(first, n - 1))
    assert tree.verify(root, leaves[i - first], n, tree.proof(levels, i, first), first)
    earlier = run.leaves()[first - 1]
    assert not tree.verify(root, earlier, n, tree.proof(levels, first, first), first)
    whole = tree.levels(run.leaves())
    assert not tree.verify(root, leaves[i - first], n, tree.proof(whole, i), first)


def test_reordering_inside_the_range_changes_the_root_and_so_does_its_start() -> None:
    run, first = honest(8), 3
    start = run.leaves()[first - 1].chained
    h = run.hashes[first:]
    honest_root = tree.root(tree.chain_leaves(h, start, first), first)
    swapped = [h[1], h[0], *h[2:]]
    assert tree.root(tree.chain_leaves(swapped, start, first), first) != honest_root
    assert tree.root(tree.chain_leaves(h, bytes(32), first), first) != honest_root
    assert tree.root(run.leaves()) != honest_root


def test_a_range_tree_refuses_leaves_out_of_position() -> None:
    leaves = honest(6).leaves()[2:]
    with pytest.raises(Invalid, match=r"tree.leaves\[0\]"):
        tree.levels(leaves)  # they start at 2, not 0
    assert tree.levels(leaves, 2)


# --- sampling ------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32), st.integers(2, 500), st.integers(0, 30), st.data())
def test_sampling_draws_only_from_the_attested_range(
    seed: bytes, n: int, s: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(1, n - 1))
    got = sample(seed, n, s, first)
    assert got == sorted(set(got)) and got[-1] == n - 1
    assert all(first <= i < n for i in got)
    assert len(got) == min(s, n - 1 - first) + 1
    assert got == sample(seed, n, s, first)


def test_unresumed_sampling_is_unchanged_and_every_range_segment_can_be_drawn() -> None:
    seed = bytes(range(32))
    assert sample(seed, 100, 16, 0) == sample(seed, 100, 16)
    seen = {i for k in range(200) for i in sample(blake3(bytes([k])).digest(), 10, 2, 6)}
    assert seen == {6, 7, 8, 9}
    with pytest.raises(Invalid, match=r"sample.first"):
        sample(seed, 10, 2, 10)


def test_the_guarantee_names_the_attested_range_and_what_it_leaves_out() -> None:
    text = guarantee("train", 512, 16, first=256)
    assert text.startswith("train: 17 of segments 256..511 re-executed")
    assert "0..255 ran on an earlier worker and are not re-checked" in text
    # Over the 10 attested, whole segments (exec's rule): 3 faked of the 9 drawn from,
    # missed with C(6,4)/C(9,4) = 15/126.
    assert guarantee("exec", 20, 4, first=10).endswith("P(detect 25 % faked) >= 88 %")
    # train's points: 20 of the 9 x 8 parts faked, missed with (1 - 20/72)^4 = 0.272.
    assert guarantee("train", 20, 4, first=10).endswith("P(detect 25 % faked) >= 72 %")
    assert guarantee("train", 512, 16) == guarantee("train", 512, 16, first=0)


# --- validation ----------------------------------------------------------------------------


def test_nonsense_ranges_are_refused_with_the_field_named() -> None:
    run = honest(6)
    att = resumed(run, 3)
    start = att.start
    assert start is not None
    with pytest.raises(Invalid, match=r"attestation.first.*0\.\.5"):
        replace(att, first=6)
    with pytest.raises(Invalid, match=r"attestation.start: missing"):
        replace(att, start=None)
    with pytest.raises(Invalid, match=r"attestation.start.index.*first - 1 = 2"):
        replace(att, start=replace(start, index=1))
    with pytest.raises(Invalid, match=r"attestation.start: only a resumed"):
        replace(att, first=0)
    wire = to_wire(att) | {"first": 9}
    with pytest.raises(Invalid, match=r"attestation.first"):
        from_wire(Attestation, wire)


def test_an_old_attestation_parses_and_keeps_its_id() -> None:
    att = honest(4).attestation()
    wire = to_wire(att)
    del wire["first"], wire["start"], wire["chain_address"], wire["binding_sig"]
    del wire["points"]
    assert from_wire(Attestation, wire) == att
    assert attestation_id(att) == blake3(b"idlegrid.verify.att/1" + encode(wire)).digest()
    run = honest(4)
    assert attestation_id(resumed(run, 2)) != attestation_id(resumed(run, 1))


def test_the_start_must_be_the_orders_resume_checkpoint() -> None:
    run = honest(6)
    att, leaf = resumed(run, 3), run.leaves()[2]
    order = Checkpoint(index=2, hash=leaf.hash, chained=leaf.chained, seconds=9)
    check_resume(att, order)
    check_resume(run.attestation(), None)
    with pytest.raises(Invalid, match=r"attestation.first: 3: the order resumed at 2"):
        check_resume(att, replace(order, index=1))
    with pytest.raises(Invalid, match=r"attestation.start.hash"):
        check_resume(att, replace(order, hash=bytes(32)))
    with pytest.raises(Invalid, match=r"attestation.start.chained"):
        check_resume(att, replace(order, chained=bytes(32)))
    with pytest.raises(Invalid, match=r"attestation.first: 3: the order resumed at 0"):
        check_resume(att, None)


# --- the game ------------------------------------------------------------------------------


@given(st.integers(2, 30), st.data())
def test_an_honest_resumed_run_passes(n: int, data: st.DataObject) -> None:
    run, first = honest(n), data.draw(st.integers(1, n - 1))
    sampled = sample(data.draw(st.binary(min_size=32, max_size=32)), n, 4, first)
    game = play(run, resumed(run, first), sampled)
    assert game.state == "passed"


def test_the_first_attested_segment_replays_from_the_resume_checkpoint() -> None:
    run = honest(6)
    att = resumed(run, 3)
    game = g.Game(att, attestation_id(att), [3, 5], DEADLINE, True, 0)
    game.start()
    [replay] = game.handle(g.Answered(answer(run, att, 3)), 5)
    assert replay == g.Replay(3, run.files[2], run.hashes[3])


def test_a_cross_class_replay_of_a_resumed_run_gets_its_own_end_file() -> None:
    run = honest(6)
    att = resumed(run, 3)
    game = g.Game(att, attestation_id(att), [3, 5], DEADLINE, False, 0)
    game.start()
    for index in (3, 5):
        reply = answer_from(att, run.hashes[3:], lambda i: run.files[i], index, with_end=True)
        [replay] = game.handle(g.Answered(reply), 5)
        assert replay == g.Replay(index, run.files[index - 1], run.hashes[index], run.files[index])


def test_a_wrong_replay_of_the_first_attested_segment_fails() -> None:
    run = honest(6)
    game = play(run, resumed(run, 3), [3, 5], wrong=3)
    assert game.state == "failed"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"checkpoint": b"another file"}, "does not match its attested hash"),
        ({"before": Leaf(index=2, hash=bytes(32), chained=bytes(32))}, "not the attested resume"),
        ({"before": None}, "starting checkpoint's leaf is missing"),
    ],
)
def test_a_bad_start_for_the_first_attested_segment_fails(
    tamper: dict[str, object], reason: str
) -> None:
    run = honest(6)
    att = resumed(run, 3)
    assert g.check_answer(att, answer(run, att, 3)) == ""
    bad = replace(answer(run, att, 3), **tamper)  # type: ignore[arg-type]
    assert reason in g.check_answer(att, bad)


def test_a_segment_before_the_attested_range_is_refused() -> None:
    run = honest(6)
    att = resumed(run, 3)
    full = run.answer(2)  # a valid answer under the whole run's tree, not this attestation's
    assert "not under the attested root" in g.check_answer(att, full)


def test_a_continuation_of_a_made_up_checkpoint_fails_against_the_real_start() -> None:
    """A resumed worker that swaps in a checkpoint of its own keeps the same attested start,
    so the file it serves for segment ``first`` does not hash to it."""
    run = honest(6)
    att = resumed(run, 3)
    forged = Run([*run.files[:2], b"made up state", *run.files[3:]])
    assert "does not match its attested hash" in g.check_answer(att, answer(forged, att, 3))


# --- what the resumed worker keeps to answer challenges ------------------------------------


def test_the_worker_keeps_the_resume_checkpoint_first_and_refuses_gaps() -> None:
    run = honest(5)

    def point(i: int) -> Checkpoint:
        blob = BlobRef(hash=bytes([i]) * 32, size=1)
        leaf = run.leaves()[i]
        return Checkpoint(index=i, hash=leaf.hash, chained=leaf.chained, seconds=i, blob=blob)

    order = TaskOrder(
        expires_ms=1, nonce=b"n" * 16, ref=run.attestation().ref, worker="w",
        price_wei_per_s=1, gpus=1, budget_wei=1, deadline_ms=1,  # type: ignore[arg-type]
        workload=Workload(kind="train", entry="t.py", steps=5, segments=5), resume=point(1),
    )  # fmt: skip
    kept = _kept(order, [point(2), point(3), point(4)])
    assert kept == [(run.hashes[i], bytes([i]) * 32) for i in (1, 2, 3, 4)]
    assert _kept(order, [point(2), point(4)]) is None, "a gap"
    assert _kept(order, [point(3), point(4)]) is None, "not from the resume point"
    assert _kept(replace(order, resume=replace(point(1), blob=None)), [point(2)]) is None
    assert _kept(replace(order, resume=None), [point(0), point(1)]) is not None
