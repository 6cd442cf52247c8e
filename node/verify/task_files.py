"""A task's files for a replay: its inputs and datasets put in a fresh work dir, as its worker
had them, and a state file the worker serves by reference.

Shared by the sentry (a challenged segment, a bisection's probes) and the worker (answering a
probe): both re-run the task's runtime from a checkpoint, and the runtime reads the task's
files from its work dir.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from consensus.market.messages import BlobRef
from consensus.verify.messages import Attestation
from node.market.blobshare import FetchFailed
from node.market.datasets import place_all
from node.market.packing import unpack
from storage.transfer_files import discard_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare

log = logging.getLogger(__name__)
MIN_FILE_RATE = 1_000_000  # bytes/s a worker must at least serve a state file at


class ReplayFiles:
    """The task's files for each replay of one check (a sampled segment, a bisection probe).

    A replay needs the work dir as the worker had it: the inputs unpacked afresh each time
    (a replay may have changed them), and the datasets as hard links to this node's one
    read-only copy of each (:mod:`storage.dataset_trees`), which the first replay fetches and
    writes out and every later one, of this check or another, links to. Writing a dataset of
    gigabytes out again for each replay was once most of a check's I/O.
    """

    def __init__(self, share: BlobShare, att: Attestation, work: Path, holders: list[str]) -> None:
        self.share, self.att, self.work, self.holders = share, att, work, holders

    async def put(self, workdir: Path) -> bool:
        """Fills ``workdir`` (emptied first) with the task's files; False (logged) when they
        could not be fetched (asked again at the next replay)."""
        return await prepare(self.share, self.att, workdir, self.holders)


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
