"""When a service's periodic sweep of its in-memory records is due.

Services that forget records past their retention check on each arrival, not on a timer of
their own (no background task to own), so that check is throttled to one pass per period of
the service's clock: a pass costs the same however many records the network makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Due at the first reading of the clock, then once ``period_ms`` after the last pass.

    Attributes:
        period_ms: the least clock time between two passes.
    """

    period_ms: int
    _next_ms: int = field(default=0, init=False)

    def due(self, now_ms: int) -> bool:
        """Whether a pass is due at ``now_ms``; True also counts as that pass being made."""
        if now_ms < self._next_ms:
            return False
        self._next_ms = now_ms + self.period_ms
        return True
