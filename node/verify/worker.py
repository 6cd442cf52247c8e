"""The worker's side of proof-of-compute: attest a finished task, answer challenges.

The attestation is signed and gossiped as soon as the result is packed, before any seed
exists, and said again until sentries judge it (:mod:`node.verify.announcer`); an attempt
resumed from another worker's checkpoint attests the segments after it. Checkpoints stay in
the node's blob store (the market put them there for failover; the resume checkpoint is there
because we fetched it); a challenge for segment ``i`` is answered from them with Merkle proofs
against the attested root. A sentry that challenges is granted the task's inputs, so it can
replay.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.envelope import new_nonce
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.market.messages import BlobRef, Checkpoint, TaskOrder
from consensus.verify import tree
from consensus.verify.messages import Attestation, ChallengeRequest, Leaf, attestation_id
from consensus.verify.sampling import common_points
from node.market.datasets import grant_all
from node.verify.play import answer_from
from node.verify.topics import (
    ATTESTATION_TTL_MS,
    CHALLENGE,
    CHALLENGE_MAX_BYTES,
    INLINE_MAX_BYTES,
)
from p2p.reqresp import RequestRejected

if TYPE_CHECKING:
    from node.market.blobshare import BlobShare
    from node.market.net import MarketNet
    from node.market.worker import Work
    from node.verify.announcer import AttestationAnnouncer
    from node.verify.store import VerifyStore

log = logging.getLogger(__name__)


def determinism_class(gpu_class: str) -> str:
    """Device class, Python and the numeric libraries: what must match for bitwise replays."""
    libs = []
    for name in ("torch", "bpy", "numpy"):
        try:
            libs.append(f"{name}-{metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "|".join([gpu_class, f"py{platform.python_version()}", *libs])


class VerifyWorker:
    def __init__(
        self,
        net: MarketNet,
        store: VerifyStore,
        share: BlobShare,
        det_class: str,
        announcer: AttestationAnnouncer,
    ) -> None:
        self.net, self.store, self.share, self.det_class = net, store, share, det_class
        self.announcer = announcer
        # (chain address, wallet binding) when the node settles on chain: lets sentries that
        # fail a task of ours slash our stake (and no one else's)
        self.binding: tuple[bytes, bytes] | None = None

    def register(self) -> None:
        self.net.serve(CHALLENGE, self._on_challenge, max_bytes=CHALLENGE_MAX_BYTES)

    async def attest(self, work: Work) -> None:
        """Signs, keeps and gossips the attestation of a task that ended ``done``.

        A task resumed from another worker's checkpoint is attested from the segment after it,
        the chain continuing from that checkpoint (which we fetched, and serve on challenges).
        """
        order, points = work.order, work.checkpoints
        if order.verification == "none":
            return  # nobody will check it: no attestation, no sentry's compute spent
        kept = _kept(order, points)
        if kept is None or work.result_hash is None:
            log.info("not attested: checkpoints missing", extra={"task": order.ref.text()})
            return
        inner = _inner(work)
        att = self._attestation(order, points, work.result_hash, inner)
        await self.store.keep_attestation(
            order.ref, msgpack.packb(to_wire(att)), kept, self.net.now_ms(), inner
        )
        # Sentries fetch these from us until the verdicts are in: the retention rule
        # (consensus.market.retention) keeps them from now, however long the task ran.
        files = [order.inputs, work.result]
        used = [blob for _, blob in kept] + [f.hash for f in files if f is not None]
        await trio.to_thread.run_sync(self.share.touch, used)
        await self.announcer.announce(attestation_id(att), att)
        log.info(
            "task attested",
            extra={"task": order.ref.text(), "segments": att.segments, "first": att.first},
        )

    def _attestation(
        self,
        order: TaskOrder,
        points: list[Checkpoint],
        result_hash: bytes,
        inner: list[list[bytes]] | None,
    ) -> Attestation:
        """The claim over segments ``first..`` (0, or the one after the resume checkpoint),
        with each segment's ``inner`` point hashes where the run gave them."""
        resume = order.resume
        start = None
        if resume is not None:
            start = Leaf(index=resume.index, hash=resume.hash, chained=resume.chained)
        first = 0 if resume is None else resume.index + 1
        hashes = [c.hash for c in points]
        chained = tree.GENESIS if start is None else start.chained
        inputs = None
        if order.inputs is not None:
            inputs = BlobRef(
                hash=order.inputs.hash, size=order.inputs.size, holders=[self.net.peer_id]
            )
        return Attestation(
            expires_ms=self.net.now_ms() + ATTESTATION_TTL_MS,
            nonce=new_nonce(),
            ref=order.ref,
            worker=self.net.peer_id,
            root=tree.root(tree.chain_leaves(hashes, chained, first, inner), first),
            segments=first + len(hashes),
            result_hash=result_hash,
            seconds=points[-1].seconds,
            runtime=order.workload.kind,
            det_class=self.det_class,
            workload=order.workload,
            inputs=inputs,
            listen=self.net.addrs(),
            first=first,
            start=start,
            chain_address=self.binding[0] if self.binding else b"",
            binding_sig=self.binding[1] if self.binding else b"",
            points=len(inner[0]) + 1 if inner else 1,
        )

    async def _on_challenge(self, peer: str, payload: Any) -> Any:
        try:
            req = from_wire(
                ChallengeRequest,
                payload.get("request") if isinstance(payload, dict) else None,
                "request",
            )
        except Invalid as exc:
            raise RequestRejected("malformed", str(exc)) from None
        kept = await self.store.attested(req.ref)
        if kept is None:
            raise RequestRejected("not_found", "no attestation of ours for that task")
        att = from_wire(Attestation, msgpack.unpackb(kept[0]))
        if attestation_id(att) != req.attestation or not att.first <= req.index < att.segments:
            raise RequestRejected("invalid", "another attestation, or no such segment")
        # Kept from segment first - 1 (the resume checkpoint) for a resumed attestation.
        segments, offset = kept[1], max(0, att.first - 1)
        if att.inputs is not None:
            self.share.grant(peer, att.inputs.hash)
        if att.workload is not None and att.workload.datasets:
            await grant_all(self.share.datasets, att.workload, peer)

        by_reference: dict[int, BlobRef] = {}

        def read(i: int) -> bytes:
            blob = segments[i - offset][1]
            size = self.share.sealed_size(blob)
            if size > INLINE_MAX_BYTES:  # too big for the answer: the sentry fetches it
                self.share.grant(peer, blob)
                by_reference[i] = BlobRef(hash=blob, size=size, holders=[self.net.peer_id])
                return b""
            return self.share.read_plain(blob)  # blobs are kept encrypted

        log.info(
            "challenge answered",
            extra={"task": req.ref.text(), "segment": req.index, "sentry": peer},
        )
        attested = slice(1 if att.first else 0, None)
        hashes = [h for h, _ in segments[attested]]
        # An exec task's kept "checkpoint" is its state hash, not a file that hashes to it:
        # no end file (no runtime measures an exec distance), or the sentry would refuse it.
        with_end = req.with_end and att.runtime != "exec"
        inner = kept[2][attested]
        answer = answer_from(att, hashes, read, req.index, with_end=with_end, points=inner)
        end = by_reference.get(req.index) if with_end else None
        answer = replace(answer, checkpoint_blob=by_reference.get(req.index - 1), end_blob=end)
        return to_wire(answer)


def _inner(work: Work) -> list[list[bytes]] | None:
    """Each run segment's inner point hashes at the count they all have (the child may have
    lowered it after the first segments); None without points, or where a segment lacks them
    (a run resumed in this process after a restart lost them): the attestation then has no
    points and sentries replay whole segments."""
    got = [list(work.points.get(c.index, ())) for c in work.checkpoints]
    try:
        count, inner = common_points(got)
    except Invalid as exc:
        log.warning("points dropped", extra={"task": work.order.ref.text(), "error": str(exc)})
        return None
    return inner if count > 1 else None


def _kept(order: TaskOrder, points: list[Checkpoint]) -> list[tuple[bytes, bytes]] | None:
    """[(state hash, checkpoint blob hash)] to keep for challenges, from the resume checkpoint
    (if any) to the last segment; None if the run's checkpoints do not cover that range."""
    resume = order.resume
    first = 0 if resume is None else resume.index + 1
    if not points or [c.index for c in points] != list(range(first, first + len(points))):
        return None
    kept = [(c.hash, c.blob.hash if c.blob else b"") for c in points]
    if resume is None:
        return kept
    if resume.blob is None:
        return None  # nothing to serve a sentry replaying segment first from
    return [(resume.hash, resume.blob.hash), *kept]
