"""Datasets a job names (``[io] datasets``): moved by the transfer layer, not as task blobs.

A task's inputs travel as one encrypted blob per job (:mod:`node.market.blobshare`), which
suits scripts and small data. A big dataset is added once (``idlegrid data add``) and named in
the spec; each worker then fetches it with the transfer layer: chunked, resumable after a
crash, and deduplicated, so a worker that ran an earlier task of the job (or any job on the
same data) moves no chunk twice. Grants keep it private: the requester lets each task's
worker fetch it, and that worker lets each sentry that challenges the task, so a replay sees
the same files. Chunks cross the network encrypted (Noise, or the bulk channel's AES-GCM);
they are stored in the clear on the worker, which has to read them anyway.

The node's dataset service (:class:`node.transfer.service.DataService`) does the work; the
market sees it through :class:`Datasets`, and a market without one (the in-memory simulation)
refuses specs that name datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from consensus.market.messages import Workload
from consensus.market.spec import JobSpec, SpecError
from node.market.blobshare import FetchFailed


class Datasets(Protocol):
    async def unusable(self, dataset_id: bytes) -> str:
        """Why a job cannot name ``dataset_id`` from this node, or "" if it can."""
        ...

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from this node, across restarts."""
        ...

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        """Fetches ``dataset_id`` (what is not held here yet) from ``holders`` into ``out``.

        Raises:
            FetchFailed: no holder served it whole.
        """
        ...


async def check_spec(datasets: Datasets | None, spec: JobSpec) -> None:
    """Refuses a spec naming a dataset this node cannot serve.

    Raises:
        SpecError: naming ``io.datasets.<name>`` and why.
    """
    for name, hex_id in sorted(spec.datasets.items()):
        if datasets is None:
            raise SpecError(f"io.datasets.{name}", "this node has no dataset service")
        why = await datasets.unusable(bytes.fromhex(hex_id))
        if why:
            raise SpecError(f"io.datasets.{name}", why)


async def grant_all(datasets: Datasets | None, workload: Workload, peer: str) -> None:
    """Lets ``peer`` (a task's worker, or a sentry checking it) fetch the workload's datasets."""
    if datasets is not None:
        for dataset_id in workload.datasets.values():
            await datasets.grant(peer, dataset_id)


async def place_all(
    datasets: Datasets | None, workload: Workload, workdir: Path, holders: list[str]
) -> None:
    """Puts each of the workload's datasets in ``workdir/<name>``.

    Raises:
        FetchFailed: one could not be fetched (not the workload's fault).
    """
    for name, dataset_id in sorted(workload.datasets.items()):
        if datasets is None:
            raise FetchFailed(f"dataset {name}: this node has no dataset service")
        try:
            await datasets.place(dataset_id, workdir / name, holders)
        except FetchFailed as exc:
            raise FetchFailed(f"dataset {name}: {exc}", exc.liars) from exc
