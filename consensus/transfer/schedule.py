"""Which chunk to ask which source for, and what each source has earned.

A pure scheduler driven by :mod:`node.transfer.fetcher`: sources pull work (so a faster source
takes more chunks), a chunk that a source failed goes back to the queue for the others, and a
source that served bytes not matching the hash is never asked again (the hash proves it lied;
a timeout or a refusal might be bad luck, so it costs score and, after a few, the source).

Transitions of a chunk (anything else is a bug and raises ``ValueError``)::

    queued   --assign-->  assigned
    assigned --done-->    done
    assigned --failed-->  queued      (this source is not asked for it again)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_FAILURES = 3


class NoSourceLeft(Exception):
    """A chunk that every usable source failed to serve."""


@dataclass
class SourceStats:
    chunks: int = 0
    bytes: int = 0
    busy_ms: int = 0
    failures: int = 0
    corrupt: int = 0
    slow: bool = False  # left for a faster source; asked again only if the others cannot serve

    @property
    def banned(self) -> bool:
        return self.corrupt > 0 or self.failures >= MAX_FAILURES

    @property
    def bytes_per_s(self) -> int:
        return self.bytes * 1000 // max(self.busy_ms, 1)


@dataclass
class Schedule:
    """The missing chunks of one transfer and the sources serving them."""

    sources: dict[str, SourceStats]
    _queue: deque[int] = field(default_factory=deque)
    _assigned: dict[int, str] = field(default_factory=dict)
    _tried: dict[int, set[str]] = field(default_factory=dict)
    _done: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, missing: Iterable[int], sources: Iterable[str]) -> Schedule:
        return cls(sources={s: SourceStats() for s in sources}, _queue=deque(missing))

    @property
    def finished(self) -> bool:
        return not self._queue and not self._assigned

    def pending(self) -> int:
        return len(self._queue) + len(self._assigned)

    def queued(self) -> int:
        return len(self._queue)

    def assign(self, source: str) -> int | None:
        """The next chunk for ``source``, or None if it has nothing (more) to do now.

        Raises:
            NoSourceLeft: a queued chunk has no usable source that has not failed it.
        """
        if self.sources[source].banned or self.sources[source].slow:
            return None
        for _ in range(len(self._queue)):
            index = self._queue.popleft()
            if source not in self._tried.get(index, ()):
                self._assigned[index] = source
                return index
            self._queue.append(index)
        self._check_progress()
        return None

    def done(self, index: int, source: str, nbytes: int, elapsed_ms: int) -> None:
        self._take(index, source)
        self._done.add(index)
        stats = self.sources[source]
        stats.chunks += 1
        stats.bytes += nbytes
        stats.busy_ms += max(elapsed_ms, 0)

    def failed(self, index: int, source: str, *, corrupt: bool) -> None:
        """``source`` did not deliver ``index`` intact: requeue it for the others."""
        self._take(index, source)
        self._tried.setdefault(index, set()).add(source)
        stats = self.sources[source]
        if corrupt:
            stats.corrupt += 1
        else:
            stats.failures += 1
        self._queue.appendleft(index)

    def release(self, source: str) -> None:
        """``source`` went away: its assigned chunks go back to the queue, untried."""
        for index in [i for i, s in self._assigned.items() if s == source]:
            del self._assigned[index]
            self._queue.appendleft(index)

    def _take(self, index: int, source: str) -> None:
        if self._assigned.get(index) != source:
            raise ValueError(f"chunk {index} is not assigned to {source}")
        del self._assigned[index]

    def _check_progress(self) -> None:
        usable = {s for s, stats in self.sources.items() if not stats.banned}
        for index in self._queue:
            if usable <= self._tried.get(index, set()):
                raise NoSourceLeft(f"chunk {index}: every usable source failed it")
