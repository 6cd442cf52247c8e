"""A task's inputs and datasets put in a fresh work dir, as its worker had them, for a replay.

Shared by the sentry (a challenged segment, a bisection's probes) and the worker (answering a
probe): both re-run the task's runtime from a checkpoint, and the runtime reads the task's
files from its work dir.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from consensus.verify.messages import Attestation
from node.market.blobshare import FetchFailed
from node.market.datasets import place_all
from node.market.packing import unpack
from storage.transfer_files import remove_tree

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare

log = logging.getLogger(__name__)


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
