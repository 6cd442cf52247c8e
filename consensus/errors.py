"""The one error type that a peer's bad input produces.

``consensus`` separates *their* fault from *ours* (h11's RemoteProtocolError vs
LocalProtocolError): anything a peer can send that we refuse raises :class:`Invalid`; a bug of
our own (encoding a float, registering a kind twice) raises the ordinary ``TypeError`` or
``ValueError``. A gossip validator maps ``Invalid`` to Reject, which costs the sender peer score,
unless ``peer_fault`` is false, in which case it maps to Ignore.
"""

from __future__ import annotations

from typing import ClassVar

# Reasons can quote peer-chosen data; bound them so a hostile message cannot flood the logs.
MAX_REASON_CHARS = 200


class Invalid(ValueError):
    """A peer's message (or part of it) that we refuse.

    Subclasses ``ValueError`` so that code which already treats a bad value as ``ValueError``
    (for example a peer id read from a config file) keeps working.

    Attributes:
        what: Which part was refused: ``"envelope"``, ``"signature"``, ``"body.price_wei"``...
        reason: Why, in a few words, for logs and for the peer-score record.
        peer_fault: Whether the sender is to blame (Reject) or not necessarily (Ignore).
    """

    peer_fault: ClassVar[bool] = True

    def __init__(self, what: str, reason: str) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid {self.what}: {self.reason}"


class Replayed(Invalid):
    """A message whose (signer, nonce) we have already accepted.

    Still ``Invalid`` (we refuse it), but not necessarily the relaying peer's fault: honest relays
    race, and gossipsub's own seen-cache is shorter than our replay window. Ethereum's gossip rules
    make duplicates IGNORE, not REJECT, for the same reason.
    """

    peer_fault: ClassVar[bool] = False


class Overloaded(Invalid):
    """We cannot judge the message now because a bounded cache is full.

    Refusing is safe (forgetting unexpired nonces would let replays through), but it is our
    limit, not the sender's fault, so it must not cost peer score.
    """

    peer_fault: ClassVar[bool] = False


class Expired(Invalid):
    """A message past its expiry.

    Refused, but not the relaying peer's fault: gossip hands recently seen messages to a peer
    that just joined, and honest relays forward what was fresh when they got it. Ethereum's
    gossip rules IGNORE messages from the past for the same reason. (A message that claims to
    live too long *is* a fault: only its signer could have chosen that expiry.)
    """

    peer_fault: ClassVar[bool] = False
