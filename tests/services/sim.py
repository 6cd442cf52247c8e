"""A market of nodes in one process: real drivers, real sqlite, in-memory network, mock clock."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nacl.signing
import outcome
import pytest
import trio
from blake3 import blake3

from consensus.kinds import Wei
from consensus.market.bidder import Bidder, Capabilities, Policy
from consensus.pool import GpuOffer, Presence, Worker
from node.market.blobshare import BlobShare
from node.market.executor import GENESIS, RunResult, RunSpec, SegmentDone, chain
from node.market.params import MarketParams
from node.market.requester import JobManager
from node.market.store import MarketStore
from node.market.worker import WorkerService
from storage.blobs import BlobStore
from storage.db import Database, _Job
from tests.services.memnet import Hub, MemNet

T = TypeVar("T")


class InlineDatabase(Database):
    """The real database, but each statement holds the event loop until it is done.

    trio's mock clock jumps as soon as the loop looks idle, and a loop waiting on the
    sqlite thread looks idle: under load a query then "took" minutes of market time, and
    envelopes stamped before it expired. Blocking the loop (only in this simulation) keeps
    virtual time still while sqlite works.
    """

    async def _call(self, fn: Callable[[], T]) -> T:
        await trio.lowlevel.checkpoint()
        finished, box = threading.Event(), []

        def run() -> None:
            try:
                box.append(outcome.capture(fn))
            finally:
                finished.set()

        self._jobs.put(_Job(run))
        finished.wait()
        return box[0].unwrap()  # type: ignore[no-any-return]


def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs ``trio.to_thread.run_sync`` calls (blob files, decryption) on the event loop, for
    the same reason as :class:`InlineDatabase`: with no short timer pending (a market with one
    task left), the mock clock would jump to the test's deadline while a thread works."""

    async def run_sync(fn: Callable[..., T], *args: object, **_: object) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)


PARAMS = MarketParams(bid_window_ms=1000, confirm_timeout_ms=2000, voucher_interval_ms=1000,
                      voucher_grace_ms=5000, lost_after_ms=4000, no_bids_retry_ms=2000)  # fmt: skip


class SimExecutor:
    """Segments that take ``segment_s`` of (mock) time; state is a hash chain, so a task
    resumed from checkpoint k ends in exactly the state an uninterrupted run reaches."""

    kinds = frozenset({"exec"})

    def __init__(self, segment_s: float) -> None:
        self.segment_s = segment_s

    async def run(self, spec: RunSpec, on_segment, on_log) -> RunResult:  # type: ignore[no-untyped-def]
        state, chained = b"genesis", GENESIS
        if spec.resume is not None:
            saved = spec.resume.read_bytes()
            state, chained = saved[:32], saved[32:]
        started = trio.current_time()
        for index in range(spec.resume_index + 1, spec.workload.segments):
            await trio.sleep(self.segment_s)
            if spec.freezer is not None:  # paused for want of vouchers: no segment ends
                await spec.freezer.wait_thawed()
            state = expected_state(state, index)
            chained = chain(chained, state)
            checkpoint = spec.workdir / f"checkpoint-{index}"
            checkpoint.write_bytes(state + chained)
            on_log(f"segment {index} done")
            seconds = int(trio.current_time() - started)
            await on_segment(SegmentDone(index, state, chained, seconds, checkpoint))
        return RunResult(True, result_hash=state)


def expected_state(state: bytes, index: int) -> bytes:
    return blake3(state + index.to_bytes(4, "big")).digest()


def final_state(segments: int) -> bytes:
    state = b"genesis"
    for index in range(segments):
        state = expected_state(state, index)
    return state


@dataclass
class SimNode:
    name: str
    net: MemNet
    store: MarketStore
    db: Database
    share: BlobShare
    root: Path
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    jobs: JobManager | None = None
    worker: WorkerService | None = None


async def make_node(hub: Hub, root: Path, name: str) -> SimNode:
    root.mkdir(parents=True, exist_ok=True)
    key = nacl.signing.SigningKey(blake3(name.encode()).digest())
    net = MemNet(hub, key)
    db = await InlineDatabase.open(root / "node.db")
    share = BlobShare(net, BlobStore(root / "blobs"), root / "scratch", key)
    share.register()
    return SimNode(name, net, MarketStore(db), db, share, root)


def worker_service(node: SimNode, price: int, segment_s: float) -> WorkerService:
    caps = Capabilities(gpu_class="cpu", gpus=1)
    bidder = Bidder(caps, Policy(price_wei_per_s=price, kinds=frozenset({"exec"})))
    return WorkerService(node.net, node.store, node.share, bidder=bidder,
                         executor=SimExecutor(segment_s), work_root=node.root / "work",
                         params=PARAMS)  # fmt: skip


def pool_entry(node: SimNode, price: int) -> Worker:
    offer = GpuOffer(gpu_class="cpu", count=1, vram_mb=0, price_wei_per_s=Wei(price))
    presence = Presence(expires_ms=2**62, nonce=os.urandom(16), run_id=b"sim", seq=1,
                        status="available", offers=[offer], capacity=1)  # fmt: skip
    return Worker(node.net.peer_id, presence, "available", 0, 0)


@dataclass
class SmallMarket:
    requester: SimNode
    workers: list[SimNode]  # in the order of their prices
    jobs: JobManager


async def small_market(
    hub: Hub, root: Path, prices: list[int], segment_s: float, params: MarketParams = PARAMS
) -> SmallMarket:
    """A requester's job manager and one worker service per price, all in the pool, with the
    input file the test jobs name written to ``root``. Nothing runs yet."""
    (root / "input.txt").write_text("data\n")
    requester = await make_node(hub, root / "requester", "requester")
    workers = [await make_node(hub, root / f"w{i}", f"worker-{i}") for i in range(len(prices))]
    hub.pool = [pool_entry(w, price) for w, price in zip(workers, prices, strict=True)]
    for worker, price in zip(workers, prices, strict=True):
        worker.worker = worker_service(worker, price, segment_s)
    jobs = JobManager(requester.net, requester.store, requester.share, root / "s", params)
    return SmallMarket(requester, workers, jobs)
