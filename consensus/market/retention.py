"""Which task files a node deletes: a task's inputs, checkpoints and results, a bisection's
probe states, each held as a sealed blob with its key and its plaintext.

A worker keeps them for the sentries that challenge its tasks; a sentry keeps what it fetched
to replay a task; a requester keeps its jobs' inputs, the checkpoints it holds for a failover,
and the results. Kept for ever they fill the disk of a node that works for many jobs, so they
go by this rule::

    a task file held here is                              outcome
    ----------------------------------------------------  ------------------------------------
    the result of a task of one of our jobs               kept (the user's output)
    the inputs of one of our jobs still open              kept (a failover sends them again)
    used since the oldest open job or running task began  kept (it may still attest, resume or
                                                          fail over from it)
    used within ``keep_ms``                               kept (a sentry challenges the task,
                                                          a bisection probes it)
    otherwise                                             deleted, key and ciphertext

A plaintext goes with the last entry naming it (one file sealed twice, for two jobs, is
stored once). "Used" is when the node last read, served or attested the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class HeldFile:
    sealed: str  # hex hash of the ciphertext: the name the network knows the file by
    plain: str  # hex hash of the plaintext beside it
    used_ms: int


@dataclass(frozen=True)
class InUse:
    """What the node's tables still need."""

    kept: frozenset[str]  # sealed hashes kept whatever their age
    since_ms: int | None  # when the oldest open job or running task began; None: there is none


def expired(
    held: Iterable[HeldFile], in_use: InUse, *, now_ms: int, keep_ms: int
) -> list[HeldFile]:
    """The files to delete, oldest use first."""

    def needed(f: HeldFile) -> bool:
        recent = now_ms - f.used_ms < keep_ms
        in_open_work = in_use.since_ms is not None and f.used_ms >= in_use.since_ms
        return f.sealed in in_use.kept or recent or in_open_work

    return sorted((f for f in held if not needed(f)), key=lambda f: (f.used_ms, f.sealed))


def orphaned_plaintexts(gone: Iterable[HeldFile], held: Iterable[HeldFile]) -> set[str]:
    """The plaintexts of ``gone`` that no other held file names."""
    gone = list(gone)
    gone_sealed = {f.sealed for f in gone}
    still_named = {f.plain for f in held if f.sealed not in gone_sealed}
    return {f.plain for f in gone} - still_named
