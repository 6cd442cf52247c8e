"""Peer scores: what a peer's bad messages cost it, and when we stop talking to it.

Each Reject costs its forwarder a penalty; the penalty decays linearly back towards zero, so an
honest peer that once relayed something odd recovers, while a peer that keeps sending garbage
crosses the ban threshold and is disconnected and not redialled until the ban expires. Ignore
outcomes (duplicates, replays, messages we are not interested in) cost nothing: honest peers
produce them all the time.

Pure: time is passed in as ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreParams:
    reject_penalty: int = 10
    ban_threshold: int = -45  # at or below: ban (five faults, with 5 s of recovery as headroom)
    recovery_per_s: int = 1  # points regained per second of good behaviour
    ban_ms: int = 10 * 60 * 1000
    max_peers: int = 10_000


@dataclass
class _Entry:
    score: int
    at_ms: int
    banned_until_ms: int = 0
    last_reason: str = ""


@dataclass(frozen=True)
class Penalised:
    """The outcome of one penalty: the new score, and whether it started a ban."""

    peer_id: str
    score: int
    banned: bool
    reason: str


class PeerScores:
    def __init__(self, params: ScoreParams = ScoreParams()) -> None:
        self.params = params
        self._peers: dict[str, _Entry] = {}

    def penalise(self, peer_id: str, reason: str, now_ms: int) -> Penalised:
        entry = self._current(peer_id, now_ms)
        entry.score -= self.params.reject_penalty
        entry.last_reason = reason
        newly_banned = entry.score <= self.params.ban_threshold and not self.banned(peer_id, now_ms)
        if newly_banned:
            entry.banned_until_ms = now_ms + self.params.ban_ms
        self._bound(now_ms)
        return Penalised(peer_id, entry.score, newly_banned, reason)

    def score(self, peer_id: str, now_ms: int) -> int:
        entry = self._peers.get(peer_id)
        return 0 if entry is None else self._decayed(entry, now_ms)

    def banned(self, peer_id: str, now_ms: int) -> bool:
        entry = self._peers.get(peer_id)
        return entry is not None and now_ms < entry.banned_until_ms

    def peers(self) -> list[str]:
        """Every peer with a penalty on record (recovered ones may be forgotten)."""
        return list(self._peers)

    def last_reason(self, peer_id: str) -> str:
        entry = self._peers.get(peer_id)
        return "" if entry is None else entry.last_reason

    def _current(self, peer_id: str, now_ms: int) -> _Entry:
        entry = self._peers.get(peer_id)
        if entry is None:
            entry = self._peers[peer_id] = _Entry(0, now_ms)
        entry.score, entry.at_ms = self._decayed(entry, now_ms), now_ms
        return entry

    def _decayed(self, entry: _Entry, now_ms: int) -> int:
        regained = max(0, now_ms - entry.at_ms) * self.params.recovery_per_s // 1000
        return min(0, entry.score + regained)

    def _bound(self, now_ms: int) -> None:
        """Forgets recovered, unbanned peers first once the table is full."""
        if len(self._peers) <= self.params.max_peers:
            return
        for peer_id, entry in list(self._peers.items()):
            if self._decayed(entry, now_ms) == 0 and now_ms >= entry.banned_until_ms:
                del self._peers[peer_id]
