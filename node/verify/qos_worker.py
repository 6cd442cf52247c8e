"""The worker's side of QoS probes (``/idlegrid/qos/1``): prepare, ping, go.

A known sentry asks us to ``prepare`` a seeded problem (the inputs drawn and moved to the
device in a thread, untimed), ``ping``s us to learn the network's round trip, then says
``go`` with a second seed: we multiply (in a thread, off the trio loop) and answer each row's
sum of squares, which the sentry checks on sampled rows and times (``gpu/probe.py``).

One probe at a time, and only while we run no task (a probe would share its device) and our
owner is not using the GPUs: otherwise we refuse with ``busy`` and the reason, which is no
fault (a sentry does count it when our presence said we were idle). The prepared inputs are
dropped after ``go`` or :data:`PREPARED_TTL_S`, whichever comes first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.verify.qos import ProbeAnswer, ProbeRequest
from gpu.bench import BenchUnavailable
from gpu.probe import Prepared, prepare
from node.verify.topics import QOS_MAX_BYTES, QOS_PROBE
from p2p.reqresp import RequestRejected

if TYPE_CHECKING:
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
PREPARED_TTL_S = 30.0  # a sentry that prepared and never said go frees our memory by then


@dataclass
class _Held:
    sentry: str
    probe: bytes
    prepared: Prepared
    until: float  # trio time


class ProbeResponder:
    """Answers probes.

    Args:
        net: where to serve ``/idlegrid/qos/1``.
        busy: why we cannot take a probe now ("": we can), e.g. no free GPU.
        is_sentry: whether a peer is a sentry we know; others are refused.
    """

    def __init__(
        self, net: MarketNet, busy: Callable[[], str], is_sentry: Callable[[str], bool]
    ) -> None:
        self.net, self.busy, self.is_sentry = net, busy, is_sentry
        self._held: _Held | None = None
        self._working = False
        self.answered = 0  # go steps answered (tests, logs)

    def register(self) -> None:
        self.net.serve(QOS_PROBE, self._on_probe, max_bytes=QOS_MAX_BYTES)

    async def _on_probe(self, peer: str, payload: Any) -> Any:
        try:
            request = from_wire(ProbeRequest, payload, "probe")
        except Invalid as exc:
            raise RequestRejected("malformed", str(exc)) from None
        if not self.is_sentry(peer):
            raise RequestRejected("refused", "probes are taken from known sentries only")
        if request.op == "ping":
            return {"pong": True}
        if request.op == "prepare":
            return await self._prepare(peer, request)
        return await self._go(peer, request)

    async def _prepare(self, peer: str, request: ProbeRequest) -> Any:
        why = self.busy()
        if why:
            raise RequestRejected("busy", why)
        held = self._held
        if held is not None and held.until < trio.current_time():
            self._held = held = None  # prepared and abandoned
        if self._working or (held is not None and held.sentry != peer):
            raise RequestRejected("busy", "another sentry's probe is running")
        self._working, self._held = True, None
        try:
            prepared = await trio.to_thread.run_sync(prepare, request.seed, request.size)
        except BenchUnavailable as exc:
            raise RequestRejected("unavailable", str(exc)) from None
        finally:
            self._working = False
        self._held = _Held(peer, request.probe, prepared, trio.current_time() + PREPARED_TTL_S)
        return {"ready": True}

    async def _go(self, peer: str, request: ProbeRequest) -> Any:
        held = self._held
        if held is None or (held.sentry, held.probe) != (peer, request.probe) or self._working:
            raise RequestRejected("invalid", "no such probe prepared")
        self._working = True
        try:
            sums, compute_ms = await trio.to_thread.run_sync(held.prepared.go, request.seed)
        finally:
            self._working, self._held = False, None
        self.answered += 1
        log.debug("probe answered", extra={"sentry": peer, "size": held.prepared.size,
                                           "compute_ms": compute_ms})  # fmt: skip
        answer = ProbeAnswer(sums=sums, compute_ms=compute_ms, device=held.prepared.device)
        return to_wire(answer)
