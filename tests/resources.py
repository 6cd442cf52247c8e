"""What a test counts to prove a component leaks nothing: trio tasks and open file descriptors."""

from __future__ import annotations

import os

import trio


def all_tasks(task: trio.lowlevel.Task | None = None) -> int:
    """Every task in the trio run, counted from the root through every nursery."""
    task = task or trio.lowlevel.current_root_task()
    assert task is not None
    return 1 + sum(all_tasks(t) for n in task.child_nurseries for t in n.child_tasks)


def task_names(task: trio.lowlevel.Task | None = None) -> list[str]:
    """The names of :func:`all_tasks`, to say which one is left over."""
    task = task or trio.lowlevel.current_root_task()
    assert task is not None
    return [task.name] + [x for n in task.child_nurseries for t in n.child_tasks
                          for x in task_names(t)]  # fmt: skip


async def tasks_down_to(count: int, timeout_s: float = 10.0) -> int:
    """The run's task count once it is at most ``count``, or after ``timeout_s``: a closed
    connection's last task may still be on its way out when the closing call returns (QUIC
    drains for a few round trips), which a busy machine stretches. A leak stays."""
    with trio.move_on_after(timeout_s):
        while all_tasks() > count:
            await trio.sleep(0.05)
    return all_tasks()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
