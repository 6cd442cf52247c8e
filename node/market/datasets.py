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

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from config.schema import Settings
from consensus.market.messages import Demand, Workload
from consensus.market.spec import JobSpec, SpecError
from consensus.transfer.manifest import Manifest
from node.market.blobshare import FetchFailed
from storage.transfer_files import nearest_existing


class NoRoom(OSError):
    """Our disk has no room for a dataset (beyond the reserve), even after deleting what
    could go: our limit, not a fault of the task or of its holder."""


def room_needed(manifest: Manifest, held: Callable[[str], bool]) -> int:
    """Bytes placing ``manifest`` takes here: its files, written out once for every task
    (:mod:`storage.dataset_trees`), and the chunks the store does not hold yet."""
    return manifest.files_bytes + sum(c.size for c in manifest.chunks if not held(c.hash.hex()))


class Datasets(Protocol):
    async def unusable(self, dataset_id: bytes) -> str:
        """Why a job cannot name ``dataset_id`` from this node, or "" if it can."""
        ...

    async def size(self, dataset_id: bytes) -> int:
        """The bytes of ``dataset_id``'s files if it is held whole here, else 0."""
        ...

    def placed(self, dataset_id: bytes, where: Path) -> bool:
        """Whether ``dataset_id`` is written out here for tasks, on the filesystem of
        ``where`` (the task folders), which then link to its files (no disk taken)."""
        ...

    async def grant(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from this node, across restarts."""
        ...

    async def lend(self, peer: str, dataset_id: bytes) -> None:
        """Lets ``peer`` fetch ``dataset_id`` from this node until it stops or the lend is
        taken back (not kept)."""
        ...

    async def unlend(self, peer: str, dataset_id: bytes) -> None:
        """Takes back one :meth:`lend`."""
        ...

    async def served_by(self, peer: str, dataset_id: bytes) -> bool:
        """Whether ``peer`` serves ``dataset_id`` to this node now (it holds it whole)."""
        ...

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        """Puts ``dataset_id`` in ``out``, read-only, fetching what is not held here yet from
        ``holders`` (making room first); one fetched here joins the cache of datasets fetched
        for tasks.

        Raises:
            FetchFailed: no holder served it whole.
            NoRoom: no room for it here.
        """
        ...

    def using(self, ids: list[bytes]) -> AbstractAsyncContextManager[None]:
        """Keeps ``ids`` from deletion while a task or a replay reads them; marks them used
        when it ends (a worker's then stay for the sentries checking the task)."""
        ...

    async def evictable(self) -> int:
        """Bytes that deleting idle cached datasets could free (nothing is deleted)."""
        ...

    async def cache_size(self) -> tuple[int, int]:
        """How many datasets fetched for tasks are held here, and their bytes."""
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


async def dataset_sizes(datasets: Datasets | None, spec: JobSpec) -> dict[str, int]:
    """The bytes of each dataset ``spec`` names, by hex id, for its demands: a worker bids
    only if they fit on its disk. A dataset no longer held here (removed since the job began)
    counts 0: the task's fetch then fails and says so."""
    if datasets is None:
        return {}
    return {d: await datasets.size(bytes.fromhex(d)) for d in sorted(set(spec.datasets.values()))}


@dataclass(frozen=True)
class Disk:
    """Where a worker's tasks put their data, and what it keeps of that disk."""

    where: Path
    reserve_bytes: int = 0  # for the machine's owner


async def disk_room(datasets: Datasets | None, demand: Demand, disk: Disk) -> tuple[int, int]:
    """The disk ``demand``'s task would take here, and the disk free for it beyond the
    operator's reserve (negative when the reserve is already cut into), counting what
    deleting idle cached datasets would free (they go only if the task comes: placing it
    makes the room); (0, 0) for a task that brings no data.

    Inputs take two copies (the fetched blob and its unpacked files). A dataset takes none
    once written out here for tasks (theirs are links to that copy); else that copy, and
    one more in the chunk store unless it is held here already. What running tasks are still
    fetching is not counted: their bytes are not on disk yet.
    """
    if demand.data_bytes() == 0:
        return 0, 0
    need = 2 * demand.inputs_bytes
    for hex_id, size in sorted(demand.datasets.items()):
        dataset_id = bytes.fromhex(hex_id)
        if datasets is not None and datasets.placed(dataset_id, disk.where):
            continue
        held = datasets is not None and await datasets.size(dataset_id) > 0
        need += size if held else 2 * size
    free = await trio.to_thread.run_sync(free_bytes, disk.where) - disk.reserve_bytes
    if datasets is not None and need > free:
        free += await datasets.evictable()
    return need, free


async def disk_status(datasets: Datasets | None, disk: Disk) -> dict[str, int]:
    """What ``worker status`` shows of the disk: room for tasks' data, the owner's reserve,
    and the datasets kept from earlier tasks (deleted first when room runs short)."""
    free = await trio.to_thread.run_sync(free_bytes, disk.where)
    count, size = (0, 0) if datasets is None else await datasets.cache_size()
    return {
        "room_bytes": free - disk.reserve_bytes, "reserve_bytes": disk.reserve_bytes,
        "cached_datasets": count, "cached_bytes": size,
    }  # fmt: skip


def task_data_keep_ms(settings: Settings) -> int:
    """How long a worker keeps a dataset after a task used it, at the least: the requester
    waits that long for verdicts (and a bisection's, beyond), and a sentry fetches the data
    here to replay the task, as the worker needs it to answer a bisection's probes."""
    if "worker" not in settings.node.roles:
        return 0  # a sentry's copy serves nobody
    verify = settings.verify
    return max(settings.worker.dataset_keep_s * 1000,
               verify.verdict_timeout_ms + verify.bisect_timeout_ms)  # fmt: skip


def free_bytes(where: Path) -> int:
    return shutil.disk_usage(nearest_existing(where)).free  # the work folder comes with work


async def grant_all(datasets: Datasets | None, workload: Workload, peer: str) -> None:
    """Lets ``peer`` (a task's worker, or a sentry checking it) fetch the workload's datasets."""
    if datasets is not None:
        for dataset_id in workload.datasets.values():
            await datasets.grant(peer, dataset_id)


@asynccontextmanager
async def using_all(datasets: Datasets | None, workload: Workload) -> AsyncIterator[None]:
    """Keeps ``workload``'s datasets here while the block (a task, a replay) runs."""
    if datasets is None or not workload.datasets:
        yield
        return
    async with datasets.using(sorted(workload.datasets.values())):
        yield


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
