"""The demo's narrator says each step once, and says why a task is still bidding."""

from __future__ import annotations

from typing import Any

import pytest

from node.demo_watch import JobWatch


def task(state: str, attempt: int, reason: str = "") -> dict[str, Any]:
    return {"task": 0, "state": state, "attempt": attempt, "checkpoints": 0, "reason": reason}


def test_a_task_auctioned_again_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    watch = JobWatch(api=None, job_id="j", names=str)  # type: ignore[arg-type]
    watch._task(task("bidding", 0))
    watch._task(task("bidding", 0))  # nothing new: nothing said
    passed = "every worker passed: A: kind train not allowed"
    watch._task(task("bidding", 1, passed))
    watch._task(task("bidding", 2, passed))  # the same reason again: said once
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "task 0: bidding",
        f"task 0: bidding ({passed})",
    ]
