"""Deletes the task files nobody needs any more (the rule: :mod:`consensus.market.retention`).

Runs on every node: a worker's checkpoints, a sentry's fetched copies and a requester's
finished jobs' inputs go once unused for ``node.task_data_expire_s`` (never sooner than a
verdict and a bisection could still ask for them); the results of the node's own jobs stay.
Reading or serving a file marks it used; the sweep reads that mark again just before a file
goes, so one taken up again since the sweep looked stays. The key goes first: a reader then
finds no key and fetches the file again, as after a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from consensus.market.lifecycle import TERMINAL
from consensus.market.retention import HeldFile, expired, orphaned_plaintexts
from node.market.keyring import Keyring, keyring_of
from node.market.store import MarketStore
from node.market.worker import ENDED
from node.network import now_ms
from storage.blobs import BlobStore

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from config.schema import Settings
    from node.daemon import NodeContext

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 600.0  # at least this often (sooner for short expiries)
# Job states after which a requester no longer sends the job's inputs or checkpoints anywhere.
FINAL_JOBS = tuple(sorted(TERMINAL | {"verified"}))


@dataclass(frozen=True)
class TaskFiles:
    """Where a node keeps its task files: the keyring names each with its plaintext."""

    keyring: Keyring
    blobs: BlobStore
    market: MarketStore

    async def sweep(self, keep_ms: int) -> tuple[int, int]:
        """Deletes every task file the rule lets go; returns how many went and how many stay."""
        held = await trio.to_thread.run_sync(self.keyring.entries)
        in_use = await self.market.files_in_use(FINAL_JOBS, ENDED)
        now = now_ms()
        stale = expired(held, in_use, now_ms=now, keep_ms=keep_ms)
        keyed, unnamed = await trio.to_thread.run_sync(self._delete, stale, held, now - keep_ms)
        return keyed + unnamed, len(held) - keyed

    def _delete(
        self, stale: list[HeldFile], held: list[HeldFile], unused_since: int
    ) -> tuple[int, int]:
        gone = []
        for f in stale:
            used = self.keyring.used_ms(f.sealed)
            if used is None or used < unused_since:  # not read or served since we looked
                self.keyring.forget(f.sealed)
                self.blobs.delete(f.sealed)
                gone.append(f)
        for plain in orphaned_plaintexts(gone, held):
            self.blobs.delete(plain)
        gone_sealed = {f.sealed for f in gone}
        named = {name for f in held if f.sealed not in gone_sealed for name in (f.sealed, f.plain)}
        return len(gone), self._delete_unnamed(named, unused_since)

    def _delete_unnamed(self, named: set[str], unused_since: int) -> int:
        """Deletes stored files no key names, written before ``unused_since``: a ciphertext
        whose key never came (a holder that lied, a crash mid-fetch). A fresh one may be a
        fetch that has not saved its key yet."""
        unnamed = 0
        for digest in list(self.blobs.iter_digests()):
            if digest not in named and _mtime_ms(self.blobs.path(digest)) < unused_since:
                unnamed += self.blobs.delete(digest)
        return unnamed


def _mtime_ms(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return 2**62  # gone meanwhile: nothing to delete


def keep_ms_of(settings: Settings) -> int:
    """How long an unused task file stays: the node's expiry, but never less than a requester
    waits for verdicts and a bisection (the sentries fetch the files from the worker)."""
    verify = settings.verify
    return max(settings.node.task_data_expire_s * 1000,
               verify.verdict_timeout_ms + verify.bisect_timeout_ms)  # fmt: skip


async def run_file_expiry(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Sweeps every quarter of the keep time (1 s to :data:`SWEEP_EVERY_S`) until cancelled."""
    keep_ms = keep_ms_of(ctx.settings)
    files = TaskFiles(keyring_of(ctx.home.work / "scratch"), ctx.blobs, MarketStore(ctx.db))
    task_status.started()
    while True:
        try:
            gone, left = await files.sweep(keep_ms)
            if gone:
                log.info("task files expired", extra={"files": gone, "left": left})
        except Exception:  # the next sweep tries again; the node goes on
            log.exception("task file expiry failed")
        await trio.sleep(min(max(keep_ms / 4000, 1.0), SWEEP_EVERY_S))
