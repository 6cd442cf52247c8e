"""A task's files for a replay: its inputs and datasets put in a fresh work dir, as its worker
had them, and a state file the worker serves by reference.

Shared by the sentry (a challenged segment, a bisection's probes) and the worker (answering a
probe): both re-run the task's runtime from a checkpoint, and the runtime reads the task's
files from its work dir.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from consensus.market.messages import BlobRef
from consensus.verify.messages import Attestation
from node.market.blobshare import FetchFailed
from node.market.datasets import place_all
from node.market.packing import unpack
from storage.transfer_files import discard_tree, link_into

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare

log = logging.getLogger(__name__)
MIN_FILE_RATE = 1_000_000  # bytes/s a worker must at least serve a state file at


class ReplayFiles:
    """The task's files for each replay of one check, its datasets written out once.

    A replay needs the work dir as the worker had it: inputs unpacked, datasets written out
    over them. Writing a dataset of gigabytes again for each sampled segment and each
    bisection probe was most of a check's I/O; now the first replay writes the datasets into
    a base folder and each replay gets hard links to those files (copies where links are
    refused), merged over its inputs, which are unpacked afresh each time. A workload may
    write into a dataset file in place (a memmap opened ``r+``) or chmod it, through its link:
    so every file in the base is stamped (inode, size, mtime, mode) when written, and a base
    whose stamps changed is written out again before the next replay, which starts from the
    dataset the worker's run started from.
    """

    def __init__(self, share: BlobShare, att: Attestation, base: Path, holders: list[str]) -> None:
        self.share, self.att, self.base, self.holders = share, att, base, holders
        self.placed = 0  # times the datasets were fetched and written out (for tests)
        self._stamps: dict[str, tuple[int, ...]] | None = None  # None: not written out

    async def put(self, workdir: Path) -> bool:
        """Fills ``workdir`` (emptied first) with the task's files; False (logged) when they
        could not be fetched (asked again at the next replay)."""
        assert self.att.workload is not None
        if not await _inputs(self.share, self.att, workdir):
            return False
        if not self.att.workload.datasets:
            return True
        if not await self._base_ready():
            return False
        for name in self.att.workload.datasets:
            await trio.to_thread.run_sync(link_into, self.base / name, workdir / name)
        return True

    async def _base_ready(self) -> bool:
        """Whether the base holds the datasets as written out (writing them out if not)."""
        if self._stamps is not None:
            if await trio.to_thread.run_sync(_stamps, self.base) == self._stamps:
                return True
            log.info("a replay changed the task's dataset files: written out again",
                     extra={"task": self.att.ref.text()})  # fmt: skip
            self._stamps = None
        self.placed += 1
        await discard_tree(self.base)
        self.base.mkdir(parents=True, mode=0o700)  # a requester's data: ours alone
        if not await _datasets(self.share, self.att, self.base, self.holders):
            return False
        self._stamps = await trio.to_thread.run_sync(_stamps, self.base)
        return True


def _stamps(root: Path) -> dict[str, tuple[int, ...]]:
    """Each file under ``root``: what a write or chmod through a hard link would change."""
    found: dict[str, tuple[int, ...]] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return found


async def prepare(share: BlobShare, att: Attestation, workdir: Path, holders: list[str]) -> bool:
    """Empties ``workdir`` and puts the task's inputs (fetched from the worker, or our own
    copy) and datasets (from ``holders``, or what this node holds) in it; False (logged)
    when one could not be fetched."""
    return await _inputs(share, att, workdir) and await _datasets(share, att, workdir, holders)


async def _inputs(share: BlobShare, att: Attestation, workdir: Path) -> bool:
    await discard_tree(workdir)
    workdir.mkdir(parents=True)
    if att.inputs is not None:
        try:
            archive = await share.fetch(att.inputs, lambda _peer: list(att.listen))
        except FetchFailed as exc:
            log.info("inputs not fetched", extra={"task": att.ref.text(), "error": str(exc)})
            return False
        await trio.to_thread.run_sync(unpack, archive, workdir)
    return True


async def _datasets(share: BlobShare, att: Attestation, workdir: Path, holders: list[str]) -> bool:
    assert att.workload is not None
    if att.workload.datasets:
        try:
            await place_all(share.datasets, att.workload, workdir, holders)
        except FetchFailed as exc:
            log.info("dataset not fetched", extra={"task": att.ref.text(), "error": str(exc)})
            return False
    return True


async def from_worker(
    share: BlobShare, att: Attestation, ref: BlobRef, answer_s: float
) -> Path | None:
    """The plaintext of ``ref``, fetched from the worker alone (whatever holders it named)
    within ``answer_s`` plus the time its size takes at :data:`MIN_FILE_RATE`, so that a
    worker trickling its file cannot hold the sentry; None (logged) when not served."""
    mine = BlobRef(hash=ref.hash, size=ref.size, holders=[att.worker])
    with trio.move_on_after(answer_s + ref.size / MIN_FILE_RATE):
        try:
            return await share.fetch(mine, lambda _peer: list(att.listen))
        except FetchFailed as exc:
            log.info("file not fetched", extra={"task": att.ref.text(), "error": str(exc)})
            return None
    log.info("file too slow", extra={"task": att.ref.text(), "bytes": ref.size})
    return None
