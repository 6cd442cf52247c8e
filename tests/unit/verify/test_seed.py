"""Commit-reveal seed: checkable, bound to the sentry, closed windows."""

from __future__ import annotations

import pytest

from consensus.errors import Invalid
from consensus.verify.seed import SeedRound, assigned, commitment, seed

ATT = bytes(range(32))


def test_seed_depends_on_every_reveal_and_not_on_order() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert seed(ATT, {"s1": a, "s2": b}) == seed(ATT, {"s2": b, "s1": a})
    assert seed(ATT, {"s1": a, "s2": b}) != seed(ATT, {"s1": a})
    assert seed(ATT, {"s1": a}) != seed(bytes(32), {"s1": a})
    with pytest.raises(Invalid, match=r"seed\.reveals"):
        seed(ATT, {})


def test_round_accepts_matching_reveals_only() -> None:
    r = SeedRound(ATT, ["s1", "s2", "s3"], commit_until_ms=100, reveal_until_ms=200)
    for name in ("s1", "s2"):
        r.commit(name, commitment(ATT, name, name.encode() * 16), 50)
    with pytest.raises(Invalid, match="not assigned"):
        r.commit("x", bytes(32), 50)
    with pytest.raises(Invalid, match="already committed"):
        r.commit("s1", bytes(32), 60)
    with pytest.raises(Invalid, match="after the commit window"):
        r.commit("s3", bytes(32), 101)
    with pytest.raises(Invalid, match="outside the reveal window"):
        r.reveal("s1", b"s1" * 16, 100)  # too early: others could still commit
    with pytest.raises(Invalid, match="does not match"):
        r.reveal("s2", b"s1" * 16, 150)  # another's secret: commitments bind the sentry
    r.reveal("s1", b"s1" * 16, 150)
    assert not r.ready(150)
    r.reveal("s2", b"s2" * 16, 160)
    assert r.ready(160)
    assert r.seed() == seed(ATT, {"s1": b"s1" * 16, "s2": b"s2" * 16})


def test_withholding_is_recorded_and_does_not_block() -> None:
    r = SeedRound(ATT, ["s1", "s2"], 100, 200)
    r.commit("s1", commitment(ATT, "s1", b"1" * 32), 10)
    r.commit("s2", commitment(ATT, "s2", b"2" * 32), 10)
    r.reveal("s1", b"1" * 32, 120)
    assert not r.ready(199)
    assert r.ready(201)
    assert r.withheld() == ["s2"]
    assert r.seed() == seed(ATT, {"s1": b"1" * 32})


def test_assignment_is_stable_and_public() -> None:
    sentries = [f"s{i}" for i in range(10)]
    two = assigned(b"task-1", sentries, 2)
    assert len(two) == 2 and two == assigned(b"task-1", reversed(sentries), 2)
    others = [s for s in sentries if s not in two][:3]
    assert assigned(b"task-1", [*two, *others], 2) == two  # adding losers changes nothing
