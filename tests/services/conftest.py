"""Fixtures shared by the in-process service tests."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """trio's mock clock, for tests that run minutes or hours of market time in seconds.

    It jumps only once the loop has been idle for 1 ms of real time: sqlite runs on a thread,
    and a jump while a query is in flight would look like a very slow disk.
    """
    return trio.testing.MockClock(autojump_threshold=0.001)
