"""When a sentry probes which worker: at random times, so a worker cannot be honest on cue.

Each worker's next probe is an exponential draw (a Poisson process) with the configured mean
after its last one, or after it was first seen; a worker that said it was busy is tried again
sooner (a quarter of a draw). Draws are capped at ``CAP`` times the mean, so no worker goes
unprobed for long. The earliest due worker goes first; probes run one at a time, so a sentry
with many workers probes each less often than the mean says (its own check costs time too).

Transitions (per worker)::

    event                          next probe
    -----------------------------  -----------------------------------
    first seen                     now + draw
    probed                         now + draw
    probed, refused as busy        now + draw / 4
    gone from the pool             (forgotten)

Time is passed in; randomness comes from the ``random.Random`` handed in (a
``random.SystemRandom`` in the daemon, a seeded one in tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CAP = 4  # the longest gap between two probes of one worker, in means
BUSY_DIVISOR = 4


@dataclass
class ProbeSchedule:
    mean_ms: int
    rng: random.Random
    due_ms: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mean_ms <= 0:
            raise ValueError("mean_ms must be positive (0 disables probing: make no schedule)")

    def draw_ms(self) -> int:
        """One gap: exponential with mean ``mean_ms``, at least 1 ms, at most ``CAP`` means."""
        gap = self.rng.expovariate(1 / self.mean_ms)
        return max(1, min(CAP * self.mean_ms, round(gap)))

    def sync(self, workers: set[str], now_ms: int) -> None:
        """Takes the pool's workers: new ones get a first probe time, gone ones are dropped."""
        for gone in self.due_ms.keys() - workers:
            del self.due_ms[gone]
        for new in sorted(workers - self.due_ms.keys()):  # sorted: same draws, same order
            self.due_ms[new] = now_ms + self.draw_ms()

    def due(self, now_ms: int) -> str | None:
        """The worker to probe now (the longest overdue), or None."""
        if not self.due_ms:
            return None
        worker = min(self.due_ms, key=lambda w: (self.due_ms[w], w))
        return worker if self.due_ms[worker] <= now_ms else None

    def probed(self, worker: str, now_ms: int, *, busy: bool = False) -> None:
        if worker not in self.due_ms:
            return  # it left the pool while we probed it
        gap = self.draw_ms()
        self.due_ms[worker] = now_ms + (max(1, gap // BUSY_DIVISOR) if busy else gap)

    def next_deadline(self) -> int | None:
        return min(self.due_ms.values(), default=None)
