"""Gossip validation: every message is a signed envelope, checked before anyone else sees it.

Outcomes follow the Ethereum gossip specs' labels: ACCEPT (deliver and forward), IGNORE (drop,
no blame: duplicates, replays, expired, topics we do not serve) and REJECT (drop and cost the
forwarder peer score: forged, malformed, wrong kind for the topic; a sender not allowed the
kind costs the message's origin instead).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from consensus.codec import DEFAULT_LIMITS
from consensus.envelope import Opened, ReplayGuard, open_envelope
from consensus.errors import Invalid
from consensus.kinds import Registry


class SenderPolicy(Protocol):
    """Who may gossip what (``node/senders.py``: by the roles a peer's hello declared)."""

    def refuse(self, origin: str, opened: Opened) -> str | None:
        """None when ``origin`` may gossip ``opened``, else why not (the origin's fault)."""
        ...

    def accepted(self, origin: str, opened: Opened) -> None:
        """Told of every message that passed every check (to learn from hellos)."""
        ...


class Verdict(enum.Enum):
    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True)
class Validation:
    """A verdict and why. ``blame_origin``: the fault is the signed origin's own, not the
    relaying peer's (which the gossip layer blames otherwise)."""

    verdict: Verdict
    reason: str = ""
    opened: Opened | None = None
    blame_origin: bool = False


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class EnvelopeValidator:
    """Checks one gossip message; one instance per node, shared by all its topics.

    Args:
        registry: the message kinds this node understands.
        topic_kinds: which kinds each topic carries; anything else on that topic is REJECT.
        policy: optional rule on who may send which kind.
        clock: Unix milliseconds; injectable for tests.
        max_bytes: largest envelope accepted on gossip. Gossip carries small announcements and
            bulk data goes over streams; py-libp2p corrupted a ~520 KiB message on the wire
            under concurrent writes, so envelopes stay small.
    """

    def __init__(
        self,
        registry: Registry,
        topic_kinds: Mapping[str, frozenset[str]],
        policy: SenderPolicy | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self.registry = registry
        self.topic_kinds = dict(topic_kinds)
        self.policy = policy
        self.clock = clock
        self.replay = ReplayGuard()
        self.limits = replace(DEFAULT_LIMITS, max_bytes=max_bytes)

    def __call__(self, topic: str, origin: str, data: bytes) -> Validation:
        kinds = self.topic_kinds.get(topic)
        if kinds is None:
            return Validation(Verdict.IGNORE, f"not a topic we serve: {topic}")
        now_ms = self.clock()
        self.replay.prune(now_ms)
        try:
            opened = open_envelope(data, now_ms, self.registry, limits=self.limits)
        except Invalid as exc:
            return _refused(exc)
        # Before the replay check: someone else's message passed off as one's own is a
        # forgery even when we have seen it (a replay by a third party is caught here).
        if (why := self._wrong_sender(kinds, topic, origin, opened)) is not None:
            return Validation(Verdict.REJECT, why)
        body = opened.body
        try:  # after the checks above, so that a forgery burns no nonce
            self.replay.check_and_remember(opened.signer, body.nonce, body.expires_ms, now_ms)
        except Invalid as exc:
            return _refused(exc)
        return self._by_policy(origin, opened)

    def _by_policy(self, origin: str, opened: Opened) -> Validation:
        """The sender policy's word, after the replay guard: an old message of a peer that
        changed its roles since, replayed by someone, is a duplicate, not that peer's fault."""
        if self.policy is not None:
            if (why := self.policy.refuse(origin, opened)) is not None:
                why = f"sender not allowed: {why}"
                return Validation(Verdict.REJECT, why, blame_origin=True)
            self.policy.accepted(origin, opened)
        return Validation(Verdict.ACCEPT, opened=opened)

    def _wrong_sender(
        self, kinds: frozenset[str], topic: str, origin: str, opened: Opened
    ) -> str | None:
        """Why ``origin`` may not send ``opened`` on ``topic``, or None."""
        if opened.kind not in kinds:
            return f"kind {opened.kind} is not carried on {topic}"
        if opened.signer_peer_id != origin:
            return "envelope signer is not the gossip origin"
        return None


def _refused(exc: Invalid) -> Validation:
    """REJECT for the sender's fault, IGNORE for what honest relays also produce."""
    return Validation(Verdict.REJECT if exc.peer_fault else Verdict.IGNORE, str(exc))
