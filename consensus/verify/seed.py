"""The challenge seed: commit-reveal among the sentries assigned to a task.

Why this rule: the seed must not exist when the worker signs its attestation (or the worker
would fake exactly the segments that will not be sampled), must be checkable by anyone
afterwards, and must not be chosen by one sentry alone. The settlement anchor's block hash
would do too, but ties verification latency to the anchor period (minutes) and to a chain the
sentry may not watch; commit-reveal needs only gossip and finishes in two short windows.

    assigned   = the ``count`` sentries with the lowest H(task, sentry) (rendezvous hashing over
                 the task reference, which the requester chose, not the worker)
    commitment = H("commit" || attestation id || sentry || secret), gossiped after the
                 attestation was seen, before the commit window closes
    seed       = H("seed" || attestation id || for each revealing sentry in id order:
                 len || sentry || secret)

A reveal that does not match its commitment is ignored; a sentry that committed and did not
reveal loses reputation (it could only choose between two seeds by withholding, and pays for
it). One honest assigned sentry makes the seed unpredictable to everyone else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from blake3 import blake3

from consensus.errors import Invalid


def commitment(attestation: bytes, sentry: str, secret: bytes) -> bytes:
    body = b"idlegrid.verify.commit/1" + attestation + _text(sentry) + secret
    return blake3(body).digest()


def seed(attestation: bytes, reveals: Mapping[str, bytes]) -> bytes:
    """The seed from the valid reveals (sentry -> secret).

    Raises:
        Invalid: no reveal at all (no seed can be formed; the round starts again).
    """
    if not reveals:
        raise Invalid("seed.reveals", "no sentry revealed")
    hasher = blake3(b"idlegrid.verify.seed/1" + attestation)
    for sentry in sorted(reveals):
        hasher.update(_text(sentry) + reveals[sentry])
    return hasher.digest()


def assigned(task_key: bytes, sentries: Iterable[str], count: int) -> list[str]:
    """The ``count`` sentries assigned to a task, by rendezvous hashing (stable as sentries come
    and go: a new sentry takes over only the tasks it now ranks first for)."""
    ranked = sorted(set(sentries), key=lambda s: blake3(task_key + _text(s)).digest())
    return sorted(ranked[:count])


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


class SeedRound:
    """Collects commitments, then reveals, for one attestation; the seed once both close.

    Time is passed in. Commitments arriving after ``commit_until_ms`` and reveals after
    ``reveal_until_ms`` are refused, so a late sentry cannot wait to see the others' secrets.
    """

    def __init__(self, attestation: bytes, sentries: Iterable[str],
                 commit_until_ms: int, reveal_until_ms: int) -> None:  # fmt: skip
        if reveal_until_ms < commit_until_ms:
            raise ValueError("the reveal window must close after the commit window")
        self.attestation, self.sentries = attestation, frozenset(sentries)
        self.commit_until_ms, self.reveal_until_ms = commit_until_ms, reveal_until_ms
        self.commits: dict[str, bytes] = {}
        self.reveals: dict[str, bytes] = {}

    def commit(self, sentry: str, value: bytes, now_ms: int) -> None:
        """Raises: Invalid: not assigned, late, or a second different commitment."""
        if sentry not in self.sentries:
            raise Invalid("seed.commit", f"{sentry} is not assigned to this task")
        if now_ms > self.commit_until_ms:
            raise Invalid("seed.commit", "after the commit window closed")
        if self.commits.setdefault(sentry, value) != value:
            raise Invalid("seed.commit", f"{sentry} already committed to another value")

    def reveal(self, sentry: str, secret: bytes, now_ms: int) -> None:
        """Raises: Invalid: no commitment, too early or late, or not matching it."""
        if sentry not in self.commits:
            raise Invalid("seed.reveal", f"{sentry} made no commitment")
        if not self.commit_until_ms < now_ms <= self.reveal_until_ms:
            raise Invalid("seed.reveal", "outside the reveal window")
        if commitment(self.attestation, sentry, secret) != self.commits[sentry]:
            raise Invalid("seed.reveal", f"{sentry}'s secret does not match its commitment")
        self.reveals[sentry] = secret

    def ready(self, now_ms: int) -> bool:
        """Whether the seed can be formed: every committer revealed, or the window closed."""
        everyone = bool(self.commits) and set(self.reveals) == set(self.commits)
        return (everyone and now_ms > self.commit_until_ms) or now_ms > self.reveal_until_ms

    def seed(self) -> bytes:
        return seed(self.attestation, self.reveals)

    def withheld(self) -> list[str]:
        """Sentries that committed and never revealed (judged once the round is over)."""
        return sorted(set(self.commits) - set(self.reveals))
