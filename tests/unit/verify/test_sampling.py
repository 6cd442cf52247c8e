"""The public sampling rule and the stated guarantee."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations, product
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.verify.sampling import (
    choose_points,
    common_points,
    detection_probability,
    guarantee,
    miss_probability,
    point_step,
    sample,
    size_for,
    stops,
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
    assert text == (
        "train: 17 of 512 segments re-executed, 16 of them up to a drawn point, "
        "P(detect 25 % faked) >= 99 %"
    )
    assert guarantee("train", 256, 16).endswith(">= 99 %")
    assert (
        guarantee("exec", 1, 16)
        == "exec: 1 of 1 segments re-executed, P(detect 25 % faked) >= 100 %"
    )
    assert guarantee("render", 4, 16).startswith("render: 4 of 4 segments re-executed, P(")


# --- points: replays that stop inside a segment ----------------------------------------------


@given(
    st.binary(min_size=32, max_size=32), st.integers(2, 600), st.integers(1, 20), st.integers(1, 16)
)
def test_stops_are_public_in_range_and_the_final_segment_runs_whole(
    seed: bytes, n: int, s: int, m: int
) -> None:
    sampled = sample(seed, n, s)
    got = stops(seed, sampled, n, m, 3 * n + 1)
    assert len(got) == len(sampled) and got[-1] == m
    assert all(1 <= j <= m for j in got)
    assert got == stops(seed, sampled, n, m, 3 * n + 1)


def test_every_stop_is_drawn_as_often_as_its_share_of_the_steps() -> None:
    counts = [0] * 8
    for i in range(1600):  # 16 steps a segment: 2 per point
        for j in stops(i.to_bytes(32, "big"), [0, 1, 2], 3, 8, 48)[:-1]:
            counts[j - 1] += 1
    assert min(counts) > 320 and max(counts) < 480  # 400 expected each
    short = [0] * 8
    for i in range(900):  # 3 steps a segment: points 3, 6 and 8 close a step each
        for j in stops(i.to_bytes(32, "big"), [0, 1, 2], 3, 8, 9)[:-1]:
            short[j - 1] += 1
    assert [c for j, c in enumerate(short) if j + 1 not in (3, 6, 8)] == [0] * 5
    assert all(500 < short[j - 1] < 700 for j in (3, 6, 8))  # 600 expected each
    with pytest.raises(Invalid, match=r"stops\.points"):
        stops(bytes(32), [0], 2, 0, 4)
    with pytest.raises(Invalid, match=r"stops\.steps"):
        stops(bytes(32), [0], 2, 8, 1)


def test_point_steps_split_a_segment_evenly_and_end_at_its_end() -> None:
    assert [point_step(100, 200, j, 8) for j in range(1, 9)] == [
        112,
        125,
        137,
        150,
        162,
        175,
        187,
        200,
    ]
    assert point_step(0, 3, 8, 8) == 3 and point_step(0, 3, 1, 8) == 0  # short: points repeat


def exact_miss(faked: list[set[int]], s: int, m: int) -> Fraction:
    """P(no sample catches a fake): every s-subset of the non-final segments equally likely,
    each with a uniform stop; a stop at j catches a segment with a faked part <= j."""
    caught = [Fraction(m - min(parts) + 1, m) if parts else Fraction(0) for parts in faked]
    total = Fraction(0)
    for chosen in combinations(range(len(faked)), s):
        miss = Fraction(1)
        for i in chosen:
            miss *= 1 - caught[i]
        total += miss
    return total / comb(len(faked), s)


@pytest.mark.parametrize("m", [2, 4])
def test_the_bound_holds_for_every_way_to_fake_a_quarter(m: int) -> None:
    """Every arrangement of 25 % faked parts over 4 non-final segments (and an honest final
    one) is caught at least as often as the guarantee says: whole segments, segment ends,
    spread thin."""
    n, s, parts = 5, 2, 4 * m  # m steps a segment, one per point
    need = -(-n * m // 4)  # ceil(25 % of all n * m steps)
    bound = 1 - detection_probability(n, Fraction(1, 4), s, m)
    worst = Fraction(0)
    for mask in product([0, 1], repeat=parts):
        if sum(mask) != need:
            continue
        faked = [{j + 1 for j in range(m) if mask[i * m + j]} for i in range(4)]
        worst = max(worst, exact_miss(faked, s, m))
    assert worst <= bound
    assert bound - worst < Fraction(1, 10)  # and the bound is not far off the worst case


def test_points_cost_a_little_detection_and_half_the_replays() -> None:
    for n in (256, 512, 1024):
        whole = detection_probability(n, Fraction(1, 4), 16)
        pointed = detection_probability(n, Fraction(1, 4), 16, 8)
        assert Fraction(99, 100) <= pointed < whole


def test_points_are_chosen_where_they_save_more_than_they_cost() -> None:
    assert choose_points(0.0, 17, 16, 8) == 1  # every segment sampled: whole replays
    assert choose_points(0.0, 256, 16, 8) == 8  # free points: as many as allowed
    assert choose_points(0.001, 256, 16, 8) == 4  # 0.1 % of a segment a point
    assert choose_points(0.007, 256, 16, 8) == 2
    assert choose_points(0.05, 256, 16, 8) == 1  # dearer than the replays they save
    assert choose_points(0.001, 4096, 16, 8) == 1  # hashing every segment outweighs 16 replays


def test_common_points_keep_the_subset_every_segment_has() -> None:
    h = [bytes([i]) * 32 for i in range(8)]
    assert common_points([h[1:8], h[1:4], h[1:2]]) == (2, [[h[4]], [h[2]], [h[1]]])
    assert common_points([h[1:8], h[1:8]]) == (8, [h[1:8], h[1:8]])
    assert common_points([h[1:8], []]) == (1, [])
    assert common_points([]) == (1, [])
    with pytest.raises(Invalid, match=r"points\[0\]: 8 points: not a multiple of 3"):
        common_points([h[1:8], h[1:3]])
