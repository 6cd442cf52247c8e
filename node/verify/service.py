"""Proof-of-compute's services, one per role: worker (attest, answer challenges and QoS
probes), sentry (judge, probe), requester (verdicts, QoS flags in the auction); and every
role's ``qos`` view of sentries' reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus.market.bidder import Bidder
from node.market.service import market_of, python_runtimes
from node.market.task_folders import empty_folder
from node.verify.announcer import AttestationAnnouncer
from node.verify.devices import ReplayDevices
from node.verify.probe_worker import ProbeAnswerer
from node.verify.qos_sentry import QosProber
from node.verify.qos_view import QosView
from node.verify.qos_worker import ProbeResponder
from node.verify.requester import Verdicts
from node.verify.sentry import Sentry
from node.verify.slashing import SlashSigner
from node.verify.store import VerifyStore
from node.verify.worker import VerifyWorker, determinism_class

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.daemon import NodeContext


log = logging.getLogger(__name__)


def known_sentries(ctx: NodeContext) -> list[str]:
    """The peers that say they are sentries (and we, if we are one); with chain settlement
    only those staked as sentries (:mod:`node.chain.sentry_set`)."""
    assert ctx.network is not None
    found = {p.peer_id for p in ctx.network.book.peers.values() if "sentry" in p.roles}
    if "sentry" in ctx.settings.node.roles:
        found.add(ctx.keys.peer_id)
    staked = ctx.network.staked_sentries
    return sorted(found if staked is None else found & staked)


async def qos_view(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The node's view of sentries' QoS reports: one per node, whichever role starts it."""
    if ctx.qos is not None:
        task_status.started()
        await trio.sleep_forever()
    view = QosView(market_of(ctx).net, VerifyStore(ctx.db), lambda: known_sentries(ctx),
                   ctx.settings.verify.quorum)  # fmt: skip
    ctx.qos = view
    await view.run(task_status=task_status)


def busy_reason(bidder: Bidder) -> str:
    """Why a worker refuses a QoS probe now, or "": while it runs a task, a probe would share
    that task's device (and be measured slow); while its owner uses the GPUs, it is away."""
    if running := bidder.running():
        return f"running {len(running)} task(s): a probe would share their devices"
    return "its owner is using the GPUs" if bidder.status() == "unavailable" else ""


async def worker_verify(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    market = market_of(ctx)
    assert market.worker is not None, "starts after the worker's market service"
    det = ctx.settings.verify.det_class or determinism_class(market.worker.bidder.caps.gpu_class)
    settings = ctx.settings.verify
    announcer = AttestationAnnouncer(
        market.net, lambda peer: peer in known_sentries(ctx), settings.quorum,
        for_ms=settings.verdict_timeout_ms,
    )  # fmt: skip
    verifier = VerifyWorker(market.net, VerifyStore(ctx.db), market.share, det, announcer)
    if ctx.chain is not None:
        verifier.binding = ctx.keys.chain_binding
    verifier.register()
    bidder = market.worker.bidder
    responder = ProbeResponder(
        market.net, lambda: busy_reason(bidder), lambda peer: peer in known_sentries(ctx)
    )
    responder.register()
    (await probe_answerer(ctx)).register()
    market.worker.on_done = verifier.attest
    await announcer.run(task_status=task_status)


async def _scratch(path: Path) -> Path:
    """``path``, made and emptied of what replays before a restart left (nothing resumes
    them), listed by no workload (each reaches its own replay's folder by name)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)
    left = await trio.to_thread.run_sync(empty_folder, path)
    if left:
        log.info("stale replay folders deleted", extra={"folder": path.name, "entries": left})
    return path


async def probe_answerer(ctx: NodeContext) -> ProbeAnswerer:
    """The worker's answerer of bisection probes: replays on this machine, sandboxed, in the
    determinism class it attests."""
    market = market_of(ctx)
    profile, sandbox = await market.machine(ctx.settings.worker, ctx.home.work)
    devices = ReplayDevices.of(profile, ctx.settings.verify.det_class)
    runtimes: dict[str, Any] = {k: r for r in python_runtimes(sandbox) for k in r.kinds}
    scratch = await _scratch(sandbox.task_root(ctx.home.work) / "probes")
    return ProbeAnswerer(market.net, VerifyStore(ctx.db), market.share, runtimes, devices.gpus,
                         scratch, lambda peer: peer in known_sentries(ctx))  # fmt: skip


async def sentry_verify(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    market = market_of(ctx)
    profile, sandbox = await market.machine(ctx.settings.worker, ctx.home.work)
    devices = ReplayDevices.of(profile, ctx.settings.verify.det_class)
    log.info("sentry replays", extra={"classes": sorted(devices.classes)})
    runtimes: dict[str, Any] = {k: r for r in python_runtimes(sandbox) for k in r.kinds}
    scratch = await _scratch(sandbox.task_root(ctx.home.work) / "verify")
    sentry = Sentry(
        market.net,
        VerifyStore(ctx.db),
        market.share,
        ctx.settings.verify,
        runtimes,
        lambda: known_sentries(ctx),
        devices,
        scratch,
    )
    if ctx.chain is not None:  # the anchorer asks before it pays a task
        ctx.chain.excluded = sentry.holds
        sentry.slash_signer = SlashSigner(
            ctx.keys.wallet_key, ctx.chain.domain, ctx.settings.verify.slash_wei
        )
    interval_s = ctx.settings.verify.qos_interval_s
    async with trio.open_nursery() as nursery:
        await nursery.start(sentry.run)
        if interval_s > 0:
            view, me = ctx.qos, ctx.keys.peer_id
            assert view is not None, "starts after the qos view"
            prober = QosProber(market.net, interval_s * 1000, lambda r: view.record(r, me))
            await nursery.start(prober.run)
        task_status.started()


async def requester_verify(
    ctx: NodeContext, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    market = market_of(ctx)
    assert market.jobs is not None, "starts after the requester's market service"
    verdicts = Verdicts(
        market.net,
        VerifyStore(ctx.db),
        ctx.settings.verify.quorum,
        lambda: bool(known_sentries(ctx)),
        lambda peer: peer in known_sentries(ctx),
    )
    verdicts.bisect_timeout_ms = ctx.settings.verify.bisect_timeout_ms
    escrow = None if ctx.chain is None else ctx.chain.escrow
    if escrow is not None and ctx.settings.chain.min_worker_stake_wei > 0:
        verdicts.staked_account = escrow.address_of  # the account whose stake the bid showed
    verdicts.ready = market.jobs.verify_ready
    market.jobs.verdicts = verdicts
    market.jobs.verdict_timeout_ms = ctx.settings.verify.verdict_timeout_ms
    market.jobs.reputation_of, market.jobs.excluded = verdicts.reputation_of, verdicts.excluded
    if ctx.qos is not None:
        market.jobs.flagged_of = ctx.qos.flag_of
    await verdicts.run(task_status=task_status)
