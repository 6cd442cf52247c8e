"""What a test counts to prove a component leaks nothing: trio tasks and open file descriptors."""

from __future__ import annotations

import os

import trio


def all_tasks(task: trio.lowlevel.Task | None = None) -> int:
    """Every task in the trio run, counted from the root through every nursery."""
    task = task or trio.lowlevel.current_root_task()
    assert task is not None
    return 1 + sum(all_tasks(t) for n in task.child_nurseries for t in n.child_tasks)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
