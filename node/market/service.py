"""The market inside the daemon: the requester's job manager and the worker's service.

Both roles share one :class:`Market` per node (one network view, one store, one blob share);
each role starts its own half as its ``market`` service.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus.kinds import Registry
from consensus.market.bidder import Bidder, Capabilities, Policy
from consensus.market.messages import MARKET_KINDS
from consensus.market.spec import REFERENCE_SCORE
from consensus.verify.messages import VERIFY_DIRECT_KINDS
from gpu.bench import BENCH_FILE, saved_score
from gpu.devices import Profile, discover
from gpu.exec_runtime import ExecRuntime
from gpu.nvml import NvmlFailed
from gpu.owner import foreign_gpu_processes, our_pids
from gpu.render import RenderRuntime
from gpu.runtimes import Runtimes, python_paths
from gpu.sandbox import Limits, Sandbox, SandboxUnavailable
from gpu.train import TrainRuntime
from node.market.blob_bulk import TransferBulk
from node.market.blobshare import BlobShare
from node.market.datasets import Disk
from node.market.net import DirectEnvelopes, LiveNet
from node.market.params import MarketParams
from node.market.requester import JobManager
from node.market.store import MarketStore
from node.market.worker import WorkerService

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from config.schema import WorkerSettings
    from node.daemon import NodeContext

log = logging.getLogger(__name__)
OWNER_POLL_S = 5.0


@dataclass
class Market:
    net: LiveNet
    store: MarketStore
    share: BlobShare
    params: MarketParams
    jobs: JobManager | None = None
    worker: WorkerService | None = None
    _machine: tuple[Profile, Sandbox] | None = None
    _probing: trio.Lock = field(default_factory=trio.Lock)

    async def machine(self, worker: WorkerSettings, work_root: Path) -> tuple[Profile, Sandbox]:
        """This machine's GPUs and workload sandbox, probed once per node: NVML and the bwrap
        probe block for a while, and a worker that is also a sentry needs both twice.

        Raises:
            SandboxUnavailable: the configured sandbox cannot run here; the message says why.
        """
        async with self._probing:
            if self._machine is None:
                profile = await trio.to_thread.run_sync(discover)  # NVML blocks
                # probes bwrap
                sandbox = await trio.to_thread.run_sync(worker_sandbox, worker, work_root)
                self._machine = (profile, sandbox)
            return self._machine


def market_of(ctx: NodeContext) -> Market:
    """The node's market, made on first use (after the network service has started)."""
    if ctx.market is None:
        assert ctx.network is not None, "the market needs the network service"
        direct = Registry([*MARKET_KINDS, *VERIFY_DIRECT_KINDS])
        envelopes = DirectEnvelopes(ctx.keys.signing_key, direct)
        net = LiveNet(ctx.network, envelopes)
        share = BlobShare(net, ctx.blobs, ctx.home.work / "scratch", ctx.keys.signing_key)
        share.register()
        share.datasets = ctx.data
        if ctx.data is not None:
            share.bulk = TransferBulk(ctx.network.host, ctx.data.server, net.ensure_connected)
        m = ctx.settings.market
        params = MarketParams(
            bid_window_ms=m.bid_window_ms,
            voucher_interval_ms=m.voucher_interval_ms,
            voucher_grace_ms=m.voucher_grace_ms,
            voucher_hold_ms=m.voucher_hold_ms,
            lost_after_ms=m.lost_after_ms,
        )
        ctx.market = Market(net, MarketStore(ctx.db), share, params)
    market: Market = ctx.market
    return market


async def requester_market(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    market = market_of(ctx)
    scratch = ctx.home.work / "scratch"
    market.jobs = JobManager(market.net, market.store, market.share, scratch, market.params)
    market.jobs.escrow = None if ctx.chain is None else ctx.chain.escrow
    market.jobs.stakes = None if ctx.chain is None else ctx.chain.stakes
    market.jobs.verify_ready = trio.Event()  # the role's verify service starts next
    await market.jobs.run(task_status=task_status)


async def worker_market(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    market = market_of(ctx)
    worker = ctx.settings.worker
    profile, sandbox = await market.machine(worker, ctx.home.work)
    tasks = sandbox.task_root(ctx.home.work)
    log.info("worker sandbox", extra={"sandbox": sandbox.describe(), "task_folders": str(tasks)})
    runtimes = python_runtimes(sandbox, ctx.settings.verify.sample_size)
    executor: Any = Runtimes(runtimes, [g.index for g in profile.offered_gpus()])
    if worker.executor_wrapper:  # tests: e.g. a worker that fakes its work on purpose
        executor = importlib.import_module(worker.executor_wrapper).wrap(executor)
        log.warning("executor wrapped", extra={"wrapper": worker.executor_wrapper})
    kinds = frozenset(worker.kinds) & executor.kinds
    policy = Policy(
        price_wei_per_s=worker.price_wei_per_s,
        kinds=kinds,
        allow_network=worker.allow_network,
        idle_only=worker.idle_only,
        settled_only=ctx.chain is not None and not ctx.settings.chain.take_unsettled,
    )
    gpu_class, count, vram_mb = profile.offer()
    measured = saved_score(ctx.home.root / BENCH_FILE)  # idlegrid gpu bench
    score = measured or REFERENCE_SCORE  # what its bids' time estimates scale by
    caps = Capabilities(
        gpu_class=gpu_class, gpus=count, vram_mb=vram_mb, score=score,
        cpu_cores=profile.cpu_cores, ram_mb=profile.ram_mb, region=worker.region,
    )  # fmt: skip
    log.info("worker hardware", extra={"offer": profile.to_json()["offer"], "note": profile.note})
    market.worker = WorkerService(
        market.net, market.store, market.share, bidder=Bidder(caps, policy),
        executor=executor, work_root=tasks, params=market.params,
        disk=Disk(tasks, worker.disk_reserve_mb << 20),  # where task folders are
    )  # fmt: skip
    market.worker.payee = None if ctx.chain is None else ctx.chain.payee
    if ctx.chain is not None:  # the binding proves whose stake a requester asking for some reads
        market.worker.chain_address = ctx.chain.address
        market.worker.binding_sig = ctx.keys.chain_binding[1]
    market.worker.share_data = worker.share_task_data
    if market.worker.payee is not None:
        market.worker.payee.arrears.on_change = market.worker.block_requesters
    assert ctx.network is not None
    ctx.network.presence_source = market.worker.presence
    # Presence claims only a measured score: sentries' probes flag a claim well above what
    # they measure, and a worker that never ran `gpu bench` has claimed nothing.
    ctx.network.offer, ctx.network.score = (gpu_class, count, vram_mb), measured or 0
    market.worker.presence_changed = ctx.network.presence_changed
    async with trio.open_nursery() as nursery:
        if worker.idle_only:
            indices = [g.index for g in profile.offered_gpus()]
            nursery.start_soon(watch_owner, market.worker, indices)
        await nursery.start(market.worker.run)
        task_status.started()


async def watch_owner(service: WorkerService, indices: list[int]) -> None:
    """Idle-only: polls NVML for the owner's GPU processes and tells the worker service."""
    if not indices:
        log.warning("idle-only: a CPU-only worker cannot see its owner's use; it always bids")
        return
    busy = False
    while True:
        try:
            pids = await trio.to_thread.run_sync(
                foreign_gpu_processes, None, indices, await trio.to_thread.run_sync(our_pids)
            )
        except NvmlFailed as exc:
            log.warning("idle-only: cannot watch the GPUs", extra={"error": str(exc)})
            return
        if bool(pids) != busy:
            busy = bool(pids)
            log.info("owner activity", extra={"busy": busy, "pids": pids})
            service.owner_activity(busy)
        await trio.sleep(OWNER_POLL_S)  # polling NVML: it has no change notification


def python_runtimes(sandbox: Sandbox, sample_size: int = 16) -> list[Any]:
    """The runtimes this worker can offer: exec always; train and render where their library
    is installed and the sandbox lets workloads start this environment's Python.
    ``sample_size``: the network's ``verify.sample_size``, which a train run weighs its
    points against (:func:`consensus.verify.sampling.choose_points`)."""
    runtimes: list[Any] = [ExecRuntime(sandbox)]
    hidden = sandbox.unreadable()
    if hidden is not None:
        log.warning(
            "no train or render runtime: workloads run as nobody and cannot enter "
            f"{hidden} to start Python; install bubblewrap (apt-get install bubblewrap)"
        )
        return runtimes
    if importlib.util.find_spec("torch") is not None:
        runtimes.append(TrainRuntime(sandbox, sample=sample_size))
    else:
        log.warning("no train runtime: torch is not installed (pip install 'idlegrid[torch]')")
    if importlib.util.find_spec("bpy") is not None:
        runtimes.append(RenderRuntime(sandbox))
    else:
        log.warning("no render runtime: bpy is not installed (pip install 'idlegrid[render]')")
    return runtimes


def worker_sandbox(worker: WorkerSettings, work_root: Path) -> Sandbox:
    """The jail this worker's workloads run in (see ``worker.sandbox``), over task folders
    under ``work_root``.

    Raises:
        SandboxUnavailable: the configured sandbox cannot run here; the message says why.
    """
    limits = Limits(
        memory_mb=worker.sandbox_memory_mb,
        cpu_s=worker.sandbox_cpu_s,
        file_mb=worker.sandbox_file_mb,
        procs=worker.sandbox_procs,
    )
    sandbox = Sandbox.create(worker.sandbox, limits, readonly=python_paths())
    tasks = sandbox.task_root(work_root)
    hidden = sandbox.unreachable(tasks)
    if hidden is not None:  # a machine whose /var/tmp is not open to all
        raise SandboxUnavailable(
            f"workloads would run with limits only ({sandbox.reason}) as nobody, since this "
            f"node runs as root, and nobody cannot enter {hidden} to reach their task folders "
            f"under {tasks}: install bubblewrap (apt-get install bubblewrap), or run the "
            "node as a user other than root"
        )
    return sandbox
