"""The worker pool: every worker's liveness and availability, from presence heartbeats.

This is also the public order book: a presence message carries the worker's GPUs and its own
price per second for each GPU class. Every node keeps a pool; nothing here is authoritative,
it is soft state rebuilt from gossip within one heartbeat interval after a restart.

Transitions (``status`` of one worker; ``reported`` is the status its latest presence names)::

    from        event                                  to          effect
    ----------  -------------------------------------  ----------  ------------------
    (unknown)   presence                               reported    WorkerChanged
    online*     presence, newer seq                    reported    WorkerChanged if it differs
    online*     presence, seq not newer                (same)      none (stale or replay)
    online*     tick, silent for offline_after_ms      offline     WorkerChanged
    offline     presence, newer seq                    reported    WorkerChanged
    offline     tick, silent for forget_after_ms       (removed)   WorkerForgotten

    online* = available | busy | unavailable

A worker restarting from scratch may reuse low sequence numbers; its presence still counts
once the old entry has gone offline, because ``seq`` only orders messages within one run
(``run_id`` tells runs apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from consensus.kinds import Body, Wei

Status = Literal["available", "busy", "unavailable", "offline"]
# The statuses a worker may report itself; "offline" is only ever concluded by the pool.
REPORTED: dict[str, Status] = {
    "available": "available",
    "busy": "busy",
    "unavailable": "unavailable",
}


@dataclass(frozen=True, kw_only=True)
class GpuOffer:
    """One GPU class a worker offers, at the price the worker chose."""

    gpu_class: str
    count: int
    vram_mb: int
    price_wei_per_s: Wei


@dataclass(frozen=True, kw_only=True)
class Presence(Body):
    """A worker's heartbeat and order-book entry, gossiped every few seconds and on change.

    Attributes:
        run_id: random per daemon start; with ``seq`` it orders this worker's messages.
        seq: increases with every presence of one run.
        status: available (takes work), busy (full), unavailable (paused by its owner).
        offers: the GPU classes, counts and prices per second per GPU.
        capacity: GPUs free for new work now.
        score: the worker's benchmark score (``idlegrid gpu bench``; 1000 = the reference
            worker), the speed its bids assume and sentries' QoS probes check; 0: not said.
    """

    KIND: ClassVar[str] = "pool.presence/1"
    run_id: bytes
    seq: int
    status: str
    offers: list[GpuOffer]
    capacity: int
    region: str = ""
    name: str = ""
    listen: list[str] = field(default_factory=list)
    score: int = 0

    def __post_init__(self) -> None:
        if self.status not in REPORTED:
            raise ValueError(f"status must be one of {', '.join(REPORTED)}")
        if self.seq < 0 or self.capacity < 0 or self.score < 0:
            raise ValueError("seq, capacity and score must not be negative")


@dataclass(frozen=True)
class PresenceSeen:
    """A verified presence from ``peer_id`` (the envelope's signer, never a field of the body)."""

    peer_id: str
    presence: Presence


@dataclass(frozen=True)
class RttMeasured:
    peer_id: str
    rtt_ms: int


Event = PresenceSeen | RttMeasured


@dataclass(frozen=True)
class WorkerChanged:
    peer_id: str
    old: Status | None
    new: Status


@dataclass(frozen=True)
class WorkerForgotten:
    peer_id: str


Effect = WorkerChanged | WorkerForgotten


@dataclass
class Worker:
    """What the pool knows of one worker."""

    peer_id: str
    presence: Presence
    status: Status
    last_seen_ms: int
    first_seen_ms: int
    rtt_ms: int | None = None

    @property
    def online(self) -> bool:
        return self.status != "offline"


class Pool:
    """Tracks workers from presence; time is always passed in.

    Args:
        offline_after_ms: silence after which a worker counts as offline (a few heartbeats).
        forget_after_ms: silence after which an offline worker is dropped (bounds memory).
        max_workers: presences from new workers beyond this are ignored.
    """

    def __init__(
        self, offline_after_ms: int, forget_after_ms: int, max_workers: int = 100_000
    ) -> None:
        if not 0 < offline_after_ms <= forget_after_ms:
            raise ValueError("need 0 < offline_after_ms <= forget_after_ms")
        self.offline_after_ms = offline_after_ms
        self.forget_after_ms = forget_after_ms
        self.max_workers = max_workers
        self._workers: dict[str, Worker] = {}

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, RttMeasured):
            if (worker := self._workers.get(event.peer_id)) is not None:
                worker.rtt_ms = event.rtt_ms
            return []
        return self._on_presence(event.peer_id, event.presence, now_ms)

    def on_tick(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        for peer_id, worker in list(self._workers.items()):
            silent = now_ms - worker.last_seen_ms
            if worker.online and silent >= self.offline_after_ms:
                effects.append(WorkerChanged(peer_id, worker.status, "offline"))
                worker.status = "offline"
            if silent >= self.forget_after_ms:  # also when one tick spans both timeouts
                del self._workers[peer_id]
                effects.append(WorkerForgotten(peer_id))
        return effects

    def next_deadline(self) -> int | None:
        deadlines = [
            w.last_seen_ms + (self.offline_after_ms if w.online else self.forget_after_ms)
            for w in self._workers.values()
        ]
        return min(deadlines, default=None)

    def workers(self) -> list[Worker]:
        return sorted(self._workers.values(), key=lambda w: w.peer_id)

    def get(self, peer_id: str) -> Worker | None:
        return self._workers.get(peer_id)

    def _on_presence(self, peer_id: str, presence: Presence, now_ms: int) -> list[Effect]:
        known = self._workers.get(peer_id)
        if known is None:
            if len(self._workers) >= self.max_workers:
                return []
            new = REPORTED[presence.status]
            self._workers[peer_id] = Worker(peer_id, presence, new, now_ms, now_ms)
            return [WorkerChanged(peer_id, None, new)]
        if not _newer(presence, known.presence, known.online):
            return []
        old, known.presence, known.last_seen_ms = known.status, presence, now_ms
        known.status = REPORTED[presence.status]
        return [] if old == known.status else [WorkerChanged(peer_id, old, known.status)]


def _newer(candidate: Presence, current: Presence, online: bool) -> bool:
    if candidate.run_id == current.run_id:
        return candidate.seq > current.seq
    # Another run: a restarted worker. While the old run still looks alive, prefer the
    # message that expires later, so an old presence replayed late cannot win.
    return not online or candidate.expires_ms >= current.expires_ms
