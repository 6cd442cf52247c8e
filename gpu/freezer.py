"""Pausing a task's processes in place, so that work nobody pays for stops without being lost.

A worker whose requester stops paying must stop computing (its unpaid exposure is bounded),
but the usual cause is a requester restarting, and killing the workload then throws away
every second since its last checkpoint (all of an ``exec`` task). So the worker first
freezes the task (SIGSTOP to everything the workload runs) and thaws it (SIGCONT) when the
vouchers come back; only a requester gone for longer than the worker holds a paused task
costs the work (:class:`consensus.market.meter.MeterGuard`).

The lifeline between the daemon and the workload (:mod:`gpu.lifeline`) is never frozen: it
must stay awake to kill a frozen workload if the daemon dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import psutil
import trio

SWEEP_MS = 500  # while frozen, what a task starts later (a process, a fork) is stopped this soon


class Freezer:
    """The processes of one task, frozen and thawed together.

    Runtimes watch the process they start with :meth:`watching`; the worker calls
    :meth:`freeze` and :meth:`thaw`, and :meth:`sweep` every :data:`SWEEP_MS` while frozen to
    stop what the task started since (the workload a lifeline had not started yet when the
    freeze came, a fork).
    """

    def __init__(self) -> None:
        self._roots: set[int] = set()
        self._thawed = trio.Event()
        self._thawed.set()

    @property
    def watched(self) -> frozenset[int]:
        """The processes whose descendants a freeze stops (runs' lifelines)."""
        return frozenset(self._roots)

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def freeze(self) -> None:
        if not self.frozen:
            self._thawed = trio.Event()
            self.sweep()

    def sweep(self) -> None:
        """Stops everything below the watched processes, while frozen (again to the stopped
        ones: harmless)."""
        if self.frozen:
            for pid in list(self._roots):
                _signal_below(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if not self.frozen:
            return
        for pid in list(self._roots):
            _signal_below(pid, signal.SIGCONT)
        self._thawed.set()

    async def wait_thawed(self) -> None:
        """Returns once not frozen: for runtimes that are not processes (the market's
        simulated executor)."""
        await self._thawed.wait()

    @contextlib.contextmanager
    def watching(self, pid: int) -> Iterator[None]:
        """Freezes and thaws what ``pid`` starts (not ``pid`` itself, the lifeline) while the
        block runs."""
        self._roots.add(pid)
        self.sweep()
        try:
            yield
        finally:
            self._roots.discard(pid)


def _signal_below(pid: int, sig: signal.Signals) -> None:
    for proc in _members(pid):
        with contextlib.suppress(psutil.Error):  # gone already; psutil refuses a reused pid
            proc.send_signal(sig)


def _members(pid: int) -> list[psutil.Process]:
    """What the run led by ``pid`` (a lifeline, leader of its own process group) started:
    its descendants, and the rest of its process group, where a workload's background
    processes go when their parent exits (no pid namespace in the ``limits`` sandbox)."""
    found = {p.pid: p for p in descendants(pid)}
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if proc.pid != pid and proc.pid not in found and os.getpgid(proc.pid) == pid:
                found[proc.pid] = proc
    return list(found.values())


def descendants(pid: int) -> list[psutil.Process]:
    """Everything ``pid`` started, however deep; empty once it has gone."""
    try:
        family: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return family
