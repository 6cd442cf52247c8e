"""The worker's bidder: for each demand, bid at our own price or say why not; hold capacity.

Decision table for a demand (the first row that applies decides; every "no bid" carries its
reason, so an operator can see why a worker sat idle)::

    check                                             outcome
    ------------------------------------------------  -------------------------------------
    bid window already closed                         no bid: "bid window closed"
    we already bid on, or run, this task attempt      no bid: "already bid"
    the requester is in arrears to us (its lines      no bid: "requester 0x.. in arrears:
      wait unanchored, consensus/settlement/arrears)           ..." (also: Decline an order)
    we settle on chain and the requester does not     no bid: "the requester does not settle
      (policy.settled_only; its vouchers would pay             on chain" (also: Decline an
      nothing on chain)                                        order naming no chain account)
    kind not in policy.kinds                          no bid: "kind exec not allowed"
    job wants network, policy forbids it              no bid: "network not allowed"
    idle-only mode and the owner uses the GPU         no bid: "owner is using the machine"
    a requirement we do not meet (class, count,       no bid: "needs vram_mb >= 48000,
      VRAM, score, cores, RAM, region)                         have 24000"
    our price above the demand's maximum              no bid: "our price ... above max ..."
    estimated cost above the task's budget            no bid: "estimated cost ... above ..."
    its inputs and datasets do not fit on our disk    no bid: "no room for its data: needs
      (after the operator's reserve)                           900 MB, 120 MB free"
    no GPU free (running tasks hold them all)         no bid: "busy: 0 of 1 GPUs free"
    open bids already cover overbook x free GPUs      no bid: "enough open bids: 4 GPUs"
    otherwise                                         SendBid, and reserve the GPUs

A bid reserves nothing exclusively: a worker may have open bids for up to ``overbook`` times
its free GPUs, since most bids lose. Only an accepted order holds GPUs; an order that finds
them taken is declined and the requester's auction falls back to its next bid. Without this,
two tasks of one job announced together would each find every worker "busy" bidding on the
other.

Reservations (one per task attempt we bid on)::

    from        event                                  to         effect
    ----------  -------------------------------------  ---------  --------------------------
    (none)      demand, all checks pass                reserved   SendBid
    reserved    order at our price, before expiry,     running    Accept
                  GPUs free
    reserved    order below our price, or GPUs taken,  (none)     Decline(reason)
                  or its requester now in arrears
    reserved    award to another worker, gossiped by   (none)     Released("lost the award")
                  the requester we bid to (anyone
                  else's is ignored)
    reserved    the requester refused our bid          (none)     Released("bid refused")
    reserved    tick past hold_until                   (none)     Released("no award in time")
    (none)      order (e.g. after our restart)         running    Accept if price and capacity
                                                                  allow, else Decline(reason)
    running     task ended                             (none)     Released("task ended")
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.market.messages import Award, Demand, TaskOrder, TaskRef
from consensus.market.spec import REFERENCE_SCORE, Requirements, estimated_seconds
from consensus.settlement.units import format_rate, format_wei

UNSETTLED = "the requester does not settle on chain"
MB = 1 << 20  # disk sizes in reasons (MiB, as df -m and the sandbox's _mb settings): a need
# rounds up, what is free down


@dataclass(frozen=True)
class Capabilities:
    """What this worker has, from GPU discovery and its benchmark."""

    gpu_class: str
    gpus: int
    vram_mb: int = 0
    score: int = REFERENCE_SCORE
    cpu_cores: int = 0
    ram_mb: int = 0
    region: str = ""


@dataclass(frozen=True)
class Policy:
    """The owner's rules: price per GPU-second, what to accept, how long to hold a bid."""

    price_wei_per_s: int
    kinds: frozenset[str] = frozenset({"train", "render", "exec"})
    allow_network: bool = False
    idle_only: bool = False
    hold_ms: int = 5_000  # how long after a bid window closes a reservation waits for an order
    overbook: int = 4  # open bids allowed per free GPU
    settled_only: bool = False  # take only tasks whose requester settles on chain


@dataclass(frozen=True)
class DemandSeen:
    """A demand, with the disk its data would take here and the disk we can give it.

    The driver measures both (a dataset held here already takes one copy, not two); a
    demand that brings no data is not measured and both stay 0.
    """

    demand: Demand
    requester: str
    need_bytes: int = 0
    free_bytes: int = 0


@dataclass(frozen=True)
class OrderReceived:
    order: TaskOrder
    requester: str


@dataclass(frozen=True)
class AwardSeen:
    award: Award
    sender: str = ""  # who gossiped it: only the requester we bid to speaks for its auction


@dataclass(frozen=True)
class BidRefused:
    ref: TaskRef


@dataclass(frozen=True)
class TaskEnded:
    ref: TaskRef


@dataclass(frozen=True)
class OwnerActivity:
    busy: bool


@dataclass(frozen=True)
class Blocked:
    """Requesters whose work we decline (by peer id or lower-case chain address) and why;
    replaces the earlier set."""

    reasons: dict[str, str]


Event = DemandSeen | OrderReceived | AwardSeen | BidRefused | TaskEnded | OwnerActivity | Blocked


@dataclass(frozen=True)
class SendBid:
    """Bid terms; the driver seals them into a signed :class:`Bid` and sends it direct."""

    requester: str
    reply_to: tuple[str, ...]
    ref: TaskRef
    price_wei_per_s: int
    gpus: int
    est_seconds: int


@dataclass(frozen=True)
class NoBid:
    ref: TaskRef
    reason: str
    tell: bool = False  # whether to tell the requester (a Pass), see Bidder._why_not


@dataclass(frozen=True)
class Accept:
    order: TaskOrder
    requester: str


@dataclass(frozen=True)
class Decline:
    ref: TaskRef
    reason: str


@dataclass(frozen=True)
class Released:
    ref: TaskRef
    reason: str


Effect = SendBid | NoBid | Accept | Decline | Released


@dataclass
class _Hold:
    gpus: int
    price_wei_per_s: int
    until_ms: int  # for a reservation; ignored once running
    running: bool = False
    requester: str = ""  # whose demand we bid on ("": an order we took without a bid)


@dataclass
class Bidder:
    """One worker's bidding state. Time is passed in; nothing here does I/O."""

    caps: Capabilities
    policy: Policy
    owner_busy: bool = False
    blocked: dict[str, str] = field(default_factory=dict)
    _holds: dict[TaskRef, _Hold] = field(default_factory=dict)

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, DemandSeen):
            return [self._on_demand(event, now_ms)]
        if isinstance(event, OrderReceived):
            return [self._on_order(event.order, event.requester, now_ms)]
        if isinstance(event, AwardSeen):
            return self._on_award(event.award, event.sender)
        if isinstance(event, BidRefused):
            hold = self._holds.get(event.ref)
            return [] if hold is None or hold.running else self._release(event.ref, "bid refused")
        if isinstance(event, TaskEnded):
            return self._release(event.ref, "task ended")
        self._set(event)
        return []

    def _set(self, event: OwnerActivity | Blocked) -> None:
        if isinstance(event, Blocked):
            self.blocked = dict(event.reasons)
        else:
            self.owner_busy = event.busy

    def on_tick(self, now_ms: int) -> list[Effect]:
        expired = [r for r, h in self._holds.items() if not h.running and now_ms >= h.until_ms]
        return [e for ref in expired for e in self._release(ref, "no award in time")]

    def next_deadline(self) -> int | None:
        return min((h.until_ms for h in self._holds.values() if not h.running), default=None)

    def open_bid_gpus(self) -> int:
        return sum(h.gpus for h in self._holds.values() if not h.running)

    def free_gpus(self) -> int:
        """GPUs not held by a running task."""
        return self.caps.gpus - sum(h.gpus for h in self._holds.values() if h.running)

    def running(self) -> list[TaskRef]:
        return [ref for ref, hold in self._holds.items() if hold.running]

    def status(self) -> str:
        """What presence reports: available, busy (no free GPU) or unavailable (owner)."""
        if self.policy.idle_only and self.owner_busy:
            return "unavailable"
        return "available" if self.free_gpus() > 0 else "busy"

    def estimate_s(self, demand: Demand) -> int:
        """Seconds we expect the task to take, scaled from the reference worker by score."""
        return estimated_seconds(demand.estimate_s, self.caps.score)

    def _on_demand(self, seen: DemandSeen, now_ms: int) -> Effect:
        demand, requester = seen.demand, seen.requester
        refused = self._why_not(seen, now_ms)
        if refused is not None:
            return refused
        gpus = demand.requirements.gpu_count
        until = demand.bid_until_ms + self.policy.hold_ms
        self._holds[demand.ref] = _Hold(gpus, self.policy.price_wei_per_s, until,
                                        requester=requester)  # fmt: skip
        return SendBid(requester, tuple(demand.reply_to), demand.ref,
                       self.policy.price_wei_per_s, gpus, self.estimate_s(demand))  # fmt: skip

    def _why_not(self, seen: DemandSeen, now_ms: int) -> NoBid | None:
        """The first row of the decision table (module doc) that refuses ``demand``, if any.

        The requester is told (``tell``) when the reason is ours alone (policy, load, cost):
        its pool counted us as a candidate and would otherwise wait out the window for us.
        A requirement or price we miss it can see for itself in the order book.
        """
        demand, requester = seen.demand, seen.requester
        price, gpus = self.policy.price_wei_per_s, demand.requirements.gpu_count
        est_s, free = self.estimate_s(demand), self.free_gpus()
        cost = price * gpus * est_s
        unmet = unmet_requirement(demand.requirements, self.caps)
        rows = (
            (now_ms >= demand.bid_until_ms, "bid window closed", False),
            (demand.ref in self._holds, "already bid", False),
            (requester in self.blocked, self.blocked.get(requester, ""), True),
            (self.policy.settled_only and not demand.settles, UNSETTLED, True),
            (demand.kind not in self.policy.kinds, f"kind {demand.kind} not allowed", True),
            (demand.network and not self.policy.allow_network, "network not allowed", True),
            (self.policy.idle_only and self.owner_busy,
             "owner is using the machine (idle-only)", True),
            (unmet is not None, unmet or "", False),
            (price > demand.max_price_wei_per_s,
             f"our price {format_rate(price, None)} above max "
             f"{format_rate(demand.max_price_wei_per_s, None)}", False),
            (cost > demand.budget_wei,
             f"estimated cost {format_wei(cost, 'gwei')} for {est_s} s above "
             f"the task budget {format_wei(demand.budget_wei, 'gwei')}", True),
            (seen.need_bytes > seen.free_bytes,
             f"no room for its data: needs {-(-seen.need_bytes // MB)} MB, "
             f"{max(0, seen.free_bytes) // MB} MB free", True),
            (free < gpus, f"busy: {max(0, free)} of {gpus} GPUs free", True),
            (self.open_bid_gpus() + gpus > free * self.policy.overbook,
             f"enough open bids: {self.open_bid_gpus()} GPUs", True),
        )  # fmt: skip
        return next((NoBid(demand.ref, why, tell) for hit, why, tell in rows if hit), None)

    def _on_order(self, order: TaskOrder, requester: str, now_ms: int) -> Effect:
        hold = self._holds.get(order.ref)
        if hold is not None and hold.running:
            return Accept(order, requester)  # a repeated order: idempotent
        live = hold is not None and now_ms < hold.until_ms
        refusal = self._refusal(order, requester, hold if live else None)
        if refusal:
            self._holds.pop(order.ref, None)  # the requester moves to its next bid
            return Decline(order.ref, refusal)
        if hold is not None and live:
            hold.running = True
        else:  # no bid of ours, or it expired: judged afresh above
            self._holds[order.ref] = _Hold(order.gpus, order.price_wei_per_s, now_ms, running=True)
        return Accept(order, requester)

    def _refusal(self, order: TaskOrder, requester: str, bid: _Hold | None) -> str:
        """Why ``order`` is declined ("" if it is not), against our live ``bid`` if any."""
        blocked = self._blocked(order, requester)
        if blocked:
            return blocked
        if self.policy.settled_only and not order.requester_address:
            return UNSETTLED
        if bid is not None and order.price_wei_per_s < bid.price_wei_per_s:
            return "price below our bid"
        if bid is None and order.price_wei_per_s < self.policy.price_wei_per_s:
            return "price below our current rate"
        if self.free_gpus() < order.gpus:
            return f"busy: {max(0, self.free_gpus())} of {order.gpus} free"
        return ""

    def _blocked(self, order: TaskOrder, requester: str) -> str:
        return self.blocked.get(requester) or self.blocked.get(order.requester_address.lower(), "")

    def _on_award(self, award: Award, sender: str) -> list[Effect]:
        hold = self._holds.get(award.ref)
        if hold is None or hold.running:  # running: the award is ours (orders come first)
            return []
        if sender != hold.requester:  # anyone can gossip one: it would drop our bid
            return []
        return self._release(award.ref, "lost the award")

    def _release(self, ref: TaskRef, reason: str) -> list[Effect]:
        if self._holds.pop(ref, None) is None:
            return []
        return [Released(ref, reason)]


def unmet_requirement(req: Requirements, caps: Capabilities) -> str | None:
    """The first requirement ``caps`` does not meet, worded for people; None if all are met."""
    checks = (
        (req.gpu_class not in ("", caps.gpu_class),
         f"needs class {req.gpu_class}, have {caps.gpu_class}"),
        (caps.gpus < req.gpu_count, f"needs {req.gpu_count} GPUs, have {caps.gpus}"),
        (caps.vram_mb < req.vram_mb, f"needs vram_mb >= {req.vram_mb}, have {caps.vram_mb}"),
        (caps.score < req.min_score, f"needs score >= {req.min_score}, have {caps.score}"),
        (caps.cpu_cores < req.cpu_cores,
         f"needs {req.cpu_cores} CPU cores, have {caps.cpu_cores}"),
        (caps.ram_mb < req.ram_mb, f"needs ram_mb >= {req.ram_mb}, have {caps.ram_mb}"),
        (req.region not in ("", caps.region),
         f"needs region {req.region}, in {caps.region or 'none'}"),
    )  # fmt: skip
    return next((why for failed, why in checks if failed), None)
