"""The requester's auction for one task attempt: collect bids, rank them, confirm a winner.

Transitions::

    from         event                                        to           effects
    -----------  -------------------------------------------  -----------  ------------------
    open         bid that fails a check (incl. too little     open         RefuseBid(reason)
                 stake, when the requester asks for stake)    (counts as its bidder's pass)
    open         bid that passes                              open         (kept)
    open         a worker passes (says why it will not bid)   open         (reason kept)
    open         every expected bidder has bid or passed,     confirming   SendOrder(best)
                 or none still silent could beat the best bid,
                 or the window closed, with at least one bid
    open         the same, without a bid                      closed       NoBids(passes)
    confirming   the asked bidder accepts                     won          Won(bid)
    confirming   the asked bidder declines, or is silent      confirming   SendOrder(next)
                 past the confirm deadline
    confirming   ... and no bid is left                       closed       Unconfirmed(why)
    won/closed   anything                                     (same)       none

"Expected bidders" are the workers the requester's own pool says could qualify: once each has
bid or passed, waiting longer cannot improve the result, so the auction closes early. It closes
earlier still once no expected bidder still silent could beat the best bid in hand: its
presence says its price and benchmark score, so the least its bid could weigh (a
``Prospect``: that price for the task's GPUs and the seconds its score implies, the
reference worker's without one, with no latency, at the reputation we hold of it) is known
before it answers. A worker that bids below the price or above the speed its presence
announced may so lose an auction it would have won; one whose presence we lack (no
``Prospect``) is waited for. Ranking is by
effective cost (price x GPUs x the bidder's estimated seconds), raised for measured latency and
lowered for reputation, with integer arithmetic only (money never goes through a float). A
bidder that sentries flagged for claiming more speed than their probes measured
(:mod:`consensus.verify.qos`) ranks after every unflagged bid while the flag lasts, and among
flagged bids as its measured score would have bid (its estimate scaled up by claimed /
measured): it is still chosen when nobody else bids. A worker that already had this task
and ended without its result (``earlier``: it stopped, its disk filled, its fetch failed, it
died) ranks after every worker that did not, flagged or not: what stopped it is likely to
stop it again, and the cheapest worker would otherwise win every re-auction until the task
runs out of attempts. It too is still chosen when it is the only bidder.

A requester that settles on chain asks each bidder for ``min_stake_wei`` of bonded stake (read
from the contract by the node, which passes it in as ``stake_wei``): a worker that could cheat
with nothing to slash is refused, whatever its price; an unknown stake (the chain has not
answered yet) counts as none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from consensus.market.messages import Bid, Demand
from consensus.market.spec import REFERENCE_SCORE, estimated_seconds
from consensus.peer_id import short

State = Literal["open", "confirming", "won", "closed"]
NEUTRAL_REPUTATION = 500  # of 0..1000; a newcomer is neither favoured nor penalised


@dataclass(frozen=True)
class BidArrived:
    bid: Bid
    bidder: str
    rtt_ms: int | None = None
    reputation: int = NEUTRAL_REPUTATION
    flagged: int | None = None  # flagged by sentries: the score they measured (0: none)
    stake_wei: int | None = None  # bonded on chain, when the requester asks; None: unknown


@dataclass(frozen=True)
class Passed:
    bidder: str
    reason: str


@dataclass(frozen=True)
class OrderAnswered:
    bidder: str
    accepted: bool
    reason: str = ""


Event = BidArrived | Passed | OrderAnswered


@dataclass(frozen=True)
class RefuseBid:
    bidder: str
    reason: str


@dataclass(frozen=True)
class SendOrder:
    bidder: str
    bid: Bid


@dataclass(frozen=True)
class Won:
    bidder: str
    bid: Bid


@dataclass(frozen=True)
class NoBids:
    passes: tuple[str, ...] = ()  # "<peer>: <reason>" of each worker that passed


@dataclass(frozen=True)
class Unconfirmed:
    reasons: tuple[str, ...]


Effect = RefuseBid | SendOrder | Won | NoBids | Unconfirmed


@dataclass(frozen=True)
class Ranked:
    earlier: bool  # had this task before and ended without its result: after every other bid
    flagged: bool  # by sentries' QoS probes: after every unflagged bid
    weighted_cost: int
    arrived: int  # arrival order breaks ties: the earlier bid wins
    bidder: str
    bid: Bid


@dataclass(frozen=True)
class Prospect:
    """What an expected bidder's bid would weigh at best, known from its presence alone."""

    flagged: bool  # by sentries: it would rank after every unflagged bid
    floor: int  # the least weighted cost its bid could have


def prospect(
    demand: Demand,
    price_wei_per_s: int,
    score: int,
    reputation: int = NEUTRAL_REPUTATION,
    flagged: int | None = None,
) -> Prospect:
    """The best an expected bidder could bid for ``demand`` at the price and benchmark score
    its presence announced: no latency, the reputation and flag we hold of it now. A worker
    whose presence says no score (0: it ran no ``gpu bench``) bids as the reference worker."""
    score = score if score > 0 else REFERENCE_SCORE
    per_s = price_wei_per_s * demand.requirements.gpu_count
    seconds = estimated_seconds(demand.estimate_s, score)
    return Prospect(
        flagged is not None,
        _weigh(per_s, seconds, score=score, rtt_ms=0, reputation=reputation, flagged=flagged),
    )


def weighted_cost(bid: Bid, rtt_ms: int | None, reputation: int, flagged: int | None = None) -> int:
    """Effective cost: +1 % per 100 ms of latency; reputation 1000 is a third cheaper, 0 a
    third dearer than a neutral 500. A flagged bidder (``flagged`` = the score sentries
    measured) has its seconds estimated at the measured score."""
    per_s = bid.price_wei_per_s * bid.gpus
    return _weigh(per_s, bid.est_seconds, score=bid.score, rtt_ms=rtt_ms, reputation=reputation,
                  flagged=flagged)  # fmt: skip


def _weigh(
    per_s: int, seconds: int, *, score: int, rtt_ms: int | None, reputation: int,
    flagged: int | None,
) -> int:  # fmt: skip
    if flagged is not None and 0 < flagged < score:  # the estimate assumed the claim
        seconds = -(-seconds * score // flagged)
    cost = per_s * seconds
    latency = min(max(rtt_ms or 0, 0), 10_000)
    reputation = min(max(reputation, 0), 1000)
    return cost * (10_000 + latency) * (2000 - reputation) // (10_000 * 1500)


@dataclass
class Auction:
    """One task attempt's auction. Time is passed in; nothing here does I/O.

    Args:
        demand: what was gossiped; bids are checked against it.
        expected: the workers that could qualify (from the pool); empty if unknown.
        confirm_timeout_ms: how long the asked bidder has to accept the order.
        earlier: the workers of this task's earlier attempts (none of which ended in a result).
        prospects: for expected bidders whose presence we hold, the best each could bid.
        min_stake_wei: the bonded stake a bidder must hold on chain; 0 asks for none.
    """

    demand: Demand
    expected: frozenset[str] = frozenset()
    confirm_timeout_ms: int = 3_000
    earlier: frozenset[str] = frozenset()
    prospects: Mapping[str, Prospect] = field(default_factory=dict)
    min_stake_wei: int = 0
    state: State = "open"
    _ranked: list[Ranked] = field(default_factory=list)
    _bidders: set[str] = field(default_factory=set)
    _passes: dict[str, str] = field(default_factory=dict)
    _asked: Ranked | None = None
    _confirm_by_ms: int = 0
    _declines: list[str] = field(default_factory=list)

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, BidArrived):
            return self._on_bid(event, now_ms)
        if isinstance(event, Passed):
            return self._on_pass(event, now_ms)
        return self._on_answer(event, now_ms)

    def on_tick(self, now_ms: int) -> list[Effect]:
        if self.state == "open" and now_ms >= self.demand.bid_until_ms:
            return self._close_bidding(now_ms)
        if self.state == "confirming" and now_ms >= self._confirm_by_ms:
            assert self._asked is not None
            self._declines.append(f"{short(self._asked.bidder)}: no answer in time")
            return self._ask_next(now_ms)
        return []

    def next_deadline(self) -> int | None:
        if self.state == "open":
            return self.demand.bid_until_ms
        if self.state == "confirming":
            return self._confirm_by_ms
        return None

    def bids(self) -> list[Ranked]:
        """Valid bids not yet tried, best first."""
        return sorted(
            self._ranked, key=lambda r: (r.earlier, r.flagged, r.weighted_cost, r.arrived)
        )

    def _on_bid(self, event: BidArrived, now_ms: int) -> list[Effect]:
        if self.state != "open":
            return [RefuseBid(event.bidder, f"auction is {self.state}")]
        why = self._refusal(event, now_ms)
        if why is not None:
            if event.bidder in self._bidders or event.bidder in self._passes:
                return [RefuseBid(event.bidder, why)]
            # a refused bidder bids no more for this task: as good as a pass, so an auction
            # that only waited on it (an unstaked worker's, say) closes now
            self._passes[event.bidder] = f"bid refused: {why}"
            return [RefuseBid(event.bidder, why), *self._close_if_done_waiting(now_ms)]
        self._bidders.add(event.bidder)
        cost = weighted_cost(event.bid, event.rtt_ms, event.reputation, event.flagged)
        flagged, earlier = event.flagged is not None, event.bidder in self.earlier
        self._ranked.append(
            Ranked(earlier, flagged, cost, len(self._bidders), event.bidder, event.bid)
        )
        return self._close_if_done_waiting(now_ms)

    def _on_pass(self, event: Passed, now_ms: int) -> list[Effect]:
        if self.state != "open" or event.bidder in self._bidders:
            return []
        self._passes[event.bidder] = event.reason
        return self._close_if_done_waiting(now_ms)

    def _close_if_done_waiting(self, now_ms: int) -> list[Effect]:
        silent = self.expected - self._bidders - self._passes.keys()
        if self.expected and (not silent or not self._could_beat_best(silent)):
            return self._close_bidding(now_ms)
        return []

    def _could_beat_best(self, silent: frozenset[str]) -> bool:
        """Whether any of ``silent`` might still bid better than the best bid in hand.

        A tie does not beat: the bid in hand arrived first.
        """
        if not self._ranked:
            return True
        best = self.bids()[0]
        bar = (best.earlier, best.flagged, best.weighted_cost)
        for bidder in silent:
            seen = self.prospects.get(bidder)
            if seen is None or (bidder in self.earlier, seen.flagged, seen.floor) < bar:
                return True
        return False

    def _refusal(self, event: BidArrived, now_ms: int) -> str | None:
        bid, demand, req = event.bid, self.demand, self.demand.requirements
        cost = bid.price_wei_per_s * bid.gpus * bid.est_seconds
        latency_limit = req.max_latency_ms and (event.rtt_ms or 0) > req.max_latency_ms
        checks = (
            (bid.ref != demand.ref, "bid names another task"),
            (now_ms >= demand.bid_until_ms, "bid arrived after the window"),
            (event.bidder in self._bidders, "already bid"),
            (bid.price_wei_per_s > demand.max_price_wei_per_s, "price above the maximum"),
            (bid.gpus < req.gpu_count, f"offers {bid.gpus} GPUs, {req.gpu_count} needed"),
            (req.gpu_class not in ("", bid.gpu_class), f"class {bid.gpu_class} not asked for"),
            (cost > demand.budget_wei, "estimated cost above the task budget"),
            (bool(latency_limit), f"latency {event.rtt_ms} ms above {req.max_latency_ms}"),
        )
        return next((why for failed, why in checks if failed), None) or self._stake_refusal(event)

    def _stake_refusal(self, event: BidArrived) -> str | None:
        if self.min_stake_wei <= 0:
            return None
        if event.stake_wei is None:
            return f"stake unknown (the chain did not answer); {self.min_stake_wei} wei asked"
        if event.stake_wei < self.min_stake_wei:
            return f"stake {event.stake_wei} wei below the {self.min_stake_wei} wei asked"
        return None

    def _close_bidding(self, now_ms: int) -> list[Effect]:
        if not self._ranked:
            self.state = "closed"
            return [NoBids(tuple(f"{short(p)}: {why}" for p, why in sorted(self._passes.items())))]
        self.state = "confirming"
        return self._ask_next(now_ms)

    def _ask_next(self, now_ms: int) -> list[Effect]:
        remaining = self.bids()
        if not remaining:
            self.state, self._asked = "closed", None
            return [Unconfirmed(tuple(self._declines))]
        self._asked = remaining[0]
        self._ranked.remove(self._asked)
        self._confirm_by_ms = now_ms + self.confirm_timeout_ms
        return [SendOrder(self._asked.bidder, self._asked.bid)]

    def _on_answer(self, event: OrderAnswered, now_ms: int) -> list[Effect]:
        asked = self._asked
        if self.state != "confirming" or asked is None or event.bidder != asked.bidder:
            return []  # a late or unsolicited answer changes nothing
        if event.accepted:
            self.state = "won"
            return [Won(asked.bidder, asked.bid)]
        self._declines.append(f"{short(asked.bidder)}: {event.reason or 'declined'}")
        return self._ask_next(now_ms)
