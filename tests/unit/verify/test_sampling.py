"""The public sampling rule and the stated guarantee."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.verify.sampling import (
    detection_probability,
    guarantee,
    miss_probability,
    sample,
    size_for,
)


@given(st.binary(min_size=32, max_size=32), st.integers(1, 2000), st.integers(0, 40))
def test_sample_is_distinct_sorted_and_ends_with_the_final_segment(
    seed: bytes, n: int, s: int
) -> None:
    got = sample(seed, n, s)
    assert got == sorted(set(got))
    assert got[-1] == n - 1
    assert len(got) == min(s, n - 1) + 1
    assert got == sample(seed, n, s)  # anyone with the seed derives the same set


def test_different_seeds_pick_different_segments() -> None:
    picks = {tuple(sample(bytes([i]) * 32, 512, 16)) for i in range(20)}
    assert len(picks) == 20


def test_every_segment_is_picked_about_equally() -> None:
    counts = [0] * 10
    for i in range(2000):
        for j in sample(i.to_bytes(32, "big"), 11, 1)[:-1]:
            counts[j] += 1
    assert min(counts) > 140 and max(counts) < 260  # 200 expected each


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(Invalid, match=r"sample\.segments"):
        sample(bytes(32), 0, 3)
    with pytest.raises(Invalid, match=r"sample\.size"):
        sample(bytes(32), 5, -1)


def test_table_from_the_notes() -> None:
    # notes/verification.md: f = 25 % needs s = 16 for 99 % (binomial); hypergeometric is
    # never worse, so the same or a smaller s suffices at N = 512.
    assert size_for(512, Fraction(1, 4), Fraction(99, 100)) <= 16
    assert detection_probability(512, Fraction(1, 4), 16) >= Fraction(99, 100)
    assert detection_probability(512, Fraction(1, 100), 16) < Fraction(99, 100)


def test_miss_probability_edges() -> None:
    assert miss_probability(100, 0, 10) == 1
    assert miss_probability(100, 99, 1) == 0
    assert miss_probability(3, 1, 5) == 0  # everything sampled


def test_guarantee_string() -> None:
    text = guarantee("train", 512, 16)
    assert text == "train: 17 of 512 segments re-executed, P(detect 25 % faked) >= 99 %"
    assert guarantee("exec", 1, 16).startswith("exec: 1 of 1 segments re-executed")
