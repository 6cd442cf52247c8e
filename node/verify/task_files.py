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
from storage.transfer_files import remove_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare

log = logging.getLogger(__name__)
MIN_FILE_RATE = 1_000_000  # bytes/s a worker must at least serve a state file at


async def prepare(share: BlobShare, att: Attestation, workdir: Path, holders: list[str]) -> bool:
    """Empties ``workdir`` and puts the task's inputs (fetched from the worker, or our own
    copy) and datasets (from ``holders``, or what this node holds) in it; False (logged)
    when one could not be fetched."""
    assert att.workload is not None
    remove_tree(workdir)
    workdir.mkdir(parents=True)
    if att.inputs is not None:
        try:
            archive = await share.fetch(att.inputs, lambda _peer: list(att.listen))
        except FetchFailed as exc:
            log.info("inputs not fetched", extra={"task": att.ref.text(), "error": str(exc)})
            return False
        unpack(archive, workdir)
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
