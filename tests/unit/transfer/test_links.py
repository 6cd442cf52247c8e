"""What a receiver makes of measured links: windows, timeouts, which sources, when to leave one."""

from __future__ import annotations

from consensus.transfer.links import (
    BASE_TIMEOUT_S,
    MAX_WINDOW,
    MIN_WINDOW,
    SLACK,
    Probe,
    chunk_timeout,
    is_slow,
    rank,
    window,
)

MIB = 1 << 20


def test_window_covers_the_bandwidth_delay_product_within_bounds() -> None:
    assert window(None, 0, MIB) == 8  # nothing measured yet
    # loopback at 150 MB/s: a stall's worth (50 ms, 7.5 MB) and the holder's read-ahead
    assert window(0.0005, 150_000_000, MIB) == 8 + SLACK
    assert window(0.1, 100_000_000, MIB) == 15 + SLACK  # 150 ms at 100 MB/s: 15 MB in flight
    assert window(0.1, 100_000_000, 256 << 10) == 58 + SLACK  # smaller chunks: more of them
    assert window(1.0, 10**10, MIB) == MAX_WINDOW
    assert window(0.0001, 1000, MIB) >= MIN_WINDOW


def test_a_slow_link_waits_longer_for_a_chunk() -> None:
    assert chunk_timeout(0, MIB) == BASE_TIMEOUT_S
    assert chunk_timeout(100_000_000, MIB) == BASE_TIMEOUT_S
    assert chunk_timeout(20_000, 4 * MIB) > 800  # 20 KB/s: a 4 MiB chunk takes 210 s


def test_rank_uses_the_fastest_holders_and_keeps_silent_ones_as_a_last_resort() -> None:
    probes = [
        Probe("slow", "r", 0.050, True),
        Probe("lacks", "r", 0.001, False),
        Probe("silent", "r", None, False),
        Probe("fast", "r", 0.002, True),
        Probe("mid", "r", 0.010, True),
    ]
    assert rank(probes, 2) == (["fast", "mid"], ["slow", "silent"])
    assert rank(probes) == (["fast", "mid", "slow"], ["silent"])
    assert rank([Probe("lacks", "r", 0.001, False)]) == ([], [])


def test_a_source_is_left_only_when_far_behind_over_enough_chunks() -> None:
    assert not is_slow(10, 3, 1000)  # too few chunks to judge
    assert is_slow(10, 4, 1000)
    assert not is_slow(300, 50, 1000)  # slower, but within the factor
    assert not is_slow(1000, 50, 1000)
