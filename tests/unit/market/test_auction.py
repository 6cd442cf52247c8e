"""The requester's auction: ranking, early close, fallback to the next bid, and properties."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.market.auction import (
    Auction,
    BidArrived,
    NoBids,
    OrderAnswered,
    Passed,
    Prospect,
    RefuseBid,
    SendOrder,
    Unconfirmed,
    Won,
    prospect,
    weighted_cost,
)
from consensus.market.messages import TaskRef
from consensus.market.spec import Requirements
from tests.unit.market.factories import NOW, bid, demand


def test_the_cheapest_bid_wins_after_the_window() -> None:
    a = Auction(demand())
    assert a.handle(BidArrived(bid(price=60), "w1"), NOW) == []
    assert a.handle(BidArrived(bid(price=40), "w2"), NOW + 1) == []
    assert a.handle(BidArrived(bid(price=40, est_s=90), "w3"), NOW + 2) == []
    assert a.next_deadline() == NOW + 2000
    [order] = a.on_tick(NOW + 2000)
    assert order == SendOrder("w2", bid(price=40))
    [won] = a.handle(OrderAnswered("w2", True), NOW + 2010)
    assert won == Won("w2", bid(price=40))
    assert a.state == "won" and a.next_deadline() is None


def test_it_closes_as_soon_as_every_expected_bidder_has_bid_or_passed() -> None:
    a = Auction(demand(), expected=frozenset({"w1", "w2", "w3"}))
    assert a.handle(BidArrived(bid(price=70), "w1"), NOW) == []
    assert a.handle(Passed("stranger", "busy"), NOW + 1) == []  # not expected: no early close
    assert a.handle(BidArrived(bid(price=60), "w4"), NOW + 2) == []
    assert a.handle(Passed("w3", "busy"), NOW + 3) == []
    assert a.handle(BidArrived(bid(price=80), "w2"), NOW + 5) == [SendOrder("w4", bid(price=60))]


def test_it_closes_once_no_silent_bidder_could_beat_the_best_bid() -> None:
    d = demand()  # 60 s on the reference worker: every prospect below has score 1000
    floors = {w: prospect(d, price, 1000) for w, price in (("w1", 40), ("w2", 70), ("w3", 60))}
    a = Auction(d, expected=frozenset(floors), prospects=floors)
    assert a.handle(BidArrived(bid(price=70), "w2"), NOW) == []  # w1 and w3 could still beat it
    assert a.handle(BidArrived(bid(price=60), "w3"), NOW + 1) == []  # w1 still could
    assert a.handle(BidArrived(bid(price=40), "w1"), NOW + 2) == [SendOrder("w1", bid(price=40))]
    b = Auction(d, expected=frozenset(floors), prospects=floors)
    assert b.handle(BidArrived(bid(price=40), "w1"), NOW) == [SendOrder("w1", bid(price=40))]
    tie = Auction(d, expected=frozenset(floors), prospects=floors)
    assert tie.handle(BidArrived(bid(price=60), "w3"), NOW) == []
    assert tie.handle(Passed("w1", "busy"), NOW + 1) == [SendOrder("w3", bid(price=60))]


def test_it_waits_for_a_silent_bidder_it_cannot_bound() -> None:
    d = demand()
    known = {"w1": prospect(d, 90, 1000)}
    a = Auction(d, expected=frozenset({"w1", "w2"}), prospects=known)
    assert prospect(d, 10, 0) == prospect(d, 10, 1000)  # no score said: the reference's
    assert a.handle(BidArrived(bid(price=50), "w1"), NOW) == []  # w2 unknown: waited for
    assert a.handle(Passed("w2", "busy"), NOW + 1) == [SendOrder("w1", bid(price=50))]
    fast = {"w1": prospect(d, 90, 1000), "w2": prospect(d, 90, 3000)}  # a third of the seconds
    b = Auction(d, expected=frozenset(fast), prospects=fast)
    assert b.handle(BidArrived(bid(price=50), "w1"), NOW) == []  # 90 x 20 s < 50 x 60 s


def test_a_prospect_weighs_reputation_flags_and_earlier_attempts() -> None:
    d = demand()
    trusted = prospect(d, 50, 1000, reputation=1000)  # a third cheaper than a neutral 50
    a = Auction(d, expected=frozenset({"w1", "w2"}), prospects={"w2": trusted})
    assert a.handle(BidArrived(bid(price=40), "w1"), NOW) == []
    flagged = prospect(d, 1, 1000, flagged=1)
    b = Auction(d, expected=frozenset({"w1", "w2"}), prospects={"w2": flagged})
    assert b.handle(BidArrived(bid(price=90), "w1"), NOW) == [SendOrder("w1", bid(price=90))]
    c = Auction(d, expected=frozenset({"w1", "w2"}), prospects={"w2": Prospect(False, 1)},
                earlier=frozenset({"w2"}))  # fmt: skip
    assert c.handle(BidArrived(bid(price=90), "w1"), NOW) == [SendOrder("w1", bid(price=90))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 900)), min_size=1, max_size=8))
def test_closing_early_orders_the_same_winner_as_waiting_the_window(bidders: list) -> None:
    """Prospects at each bidder's own price: the early close never picks a worse bid."""
    d = demand()
    floors = {f"w{i}": prospect(d, price, 1000) for i, (price, _) in enumerate(bidders)}
    early = Auction(d, expected=frozenset(floors), prospects=floors)
    patient = Auction(d)
    first = []
    for i, (price, rtt) in enumerate(bidders):
        arrived = BidArrived(bid(price=price), f"w{i}", rtt_ms=rtt)
        first += early.handle(arrived, NOW + i)
        patient.handle(arrived, NOW + i)
    assert first[:1] == patient.on_tick(NOW + 2000)


def test_when_everyone_passes_it_says_why_at_once() -> None:
    a = Auction(demand(), expected=frozenset({"peer-aaaaaaaa", "peer-bbbbbbbb"}))
    assert a.handle(Passed("peer-aaaaaaaa", "busy: 0 of 1 GPUs free"), NOW) == []
    assert a.handle(Passed("peer-bbbbbbbb", "our price 9 above max 5"), NOW) == [
        NoBids(("eer-aaaaaaaa: busy: 0 of 1 GPUs free", "eer-bbbbbbbb: our price 9 above max 5"))
    ]


def test_a_decline_or_silence_falls_back_to_the_next_bid() -> None:
    a = Auction(demand(), confirm_timeout_ms=500)
    for i, price in enumerate((10, 20, 30)):
        a.handle(BidArrived(bid(price=price), f"w{i}"), NOW)
    a.on_tick(NOW + 2000)
    assert a.handle(OrderAnswered("w0", False, "busy"), NOW + 2001) == [
        SendOrder("w1", bid(price=20))
    ]
    assert a.handle(OrderAnswered("w0", True), NOW + 2002) == []  # late, not the one asked
    assert a.on_tick(NOW + 2501) == [SendOrder("w2", bid(price=30))]
    [effect] = a.on_tick(NOW + 3001)
    assert isinstance(effect, Unconfirmed) and len(effect.reasons) == 3
    assert "busy" in effect.reasons[0] and "no answer" in effect.reasons[1]


def test_no_bids_closes_empty() -> None:
    a = Auction(demand())
    assert a.on_tick(NOW + 1999) == []
    assert a.on_tick(NOW + 2000) == [NoBids()]


def test_bids_that_break_the_demand_are_refused_with_reasons() -> None:
    d = demand(requirements=Requirements(gpu_class="cpu", gpu_count=2, max_latency_ms=50),
               max_price=100, budget=100 * 2 * 60)  # fmt: skip
    a = Auction(d)
    other = TaskRef(job_id=bytes(16), task=1, attempt=0)
    cases = [
        (BidArrived(bid(other, gpus=2), "a"), "another task"),
        (BidArrived(bid(price=101, gpus=2), "b"), "price above"),
        (BidArrived(bid(gpus=1), "c"), "offers 1 GPUs, 2 needed"),
        (BidArrived(bid(gpus=2, gpu_class="gpu"), "d"), "class gpu"),
        (BidArrived(bid(price=100, gpus=2, est_s=61), "e"), "above the task budget"),
        (BidArrived(bid(gpus=2), "f", rtt_ms=51), "latency 51 ms"),
    ]
    for event, reason in cases:
        [effect] = a.handle(event, NOW)
        assert isinstance(effect, RefuseBid) and reason in effect.reason
    assert a.handle(BidArrived(bid(gpus=2), "g"), NOW) == []
    [effect] = a.handle(BidArrived(bid(gpus=2), "g"), NOW)
    assert effect == RefuseBid("g", "already bid")
    [late] = a.handle(BidArrived(bid(gpus=2), "h"), NOW + 2000)
    assert isinstance(late, RefuseBid) and "after the window" in late.reason


def test_a_bidder_without_the_stake_asked_is_refused_whatever_its_price() -> None:
    a = Auction(demand(), min_stake_wei=100)
    cases = [
        (BidArrived(bid(price=1), "poor", stake_wei=99), "stake 99 wei below the 100 wei asked"),
        (BidArrived(bid(price=1), "unread"), "stake unknown (the chain did not answer); 100"),
    ]
    for event, reason in cases:
        [effect] = a.handle(event, NOW)
        assert isinstance(effect, RefuseBid) and effect.reason.startswith(reason), effect
    assert a.handle(BidArrived(bid(price=90), "staked", stake_wei=100), NOW) == []
    assert a.on_tick(NOW + 2000) == [SendOrder("staked", bid(price=90))]
    free = Auction(demand())  # 0 asks for none: an unread stake is no refusal
    assert free.handle(BidArrived(bid(price=1), "unread"), NOW) == []


def test_a_refused_bid_counts_as_its_bidders_pass_for_the_early_close() -> None:
    a = Auction(demand(), expected=frozenset({"poor", "staked"}), min_stake_wei=100)
    assert a.handle(BidArrived(bid(price=90), "staked", stake_wei=100), NOW) == []
    refused, order = a.handle(BidArrived(bid(price=1), "poor", stake_wei=0), NOW + 1)
    assert isinstance(refused, RefuseBid) and order == SendOrder("staked", bid(price=90))
    alone = Auction(demand(), expected=frozenset({"poor"}), min_stake_wei=100)
    _, closed = alone.handle(BidArrived(bid(price=1), "poor", stake_wei=0), NOW)
    assert closed == NoBids(("poor: bid refused: stake 0 wei below the 100 wei asked",))
    [again] = alone.handle(BidArrived(bid(price=1), "poor", stake_wei=100), NOW)
    assert isinstance(again, RefuseBid) and "auction is closed" in again.reason


def test_latency_and_reputation_weigh_but_only_as_integers() -> None:
    b = bid(price=10**18, est_s=3600)
    neutral = weighted_cost(b, 0, 500)
    assert neutral == 10**18 * 3600
    assert weighted_cost(b, 100, 500) == neutral * 101 // 100
    assert weighted_cost(b, 0, 1000) < neutral < weighted_cost(b, 0, 0)


def test_a_flagged_bidder_ranks_after_every_unflagged_bid() -> None:
    honest = replace(bid(est_s=90), score=10)  # the same task, same price, the true speed
    cheat = replace(bid(est_s=30), score=30)  # claims 3x: a third of the seconds
    slow = replace(bid(price=80, est_s=90), score=10)  # dearer, but not flagged
    assert weighted_cost(cheat, 0, 500) < weighted_cost(honest, 0, 500)  # unflagged, it wins
    assert weighted_cost(cheat, 0, 500, flagged=10) == weighted_cost(honest, 0, 500)
    assert weighted_cost(cheat, 0, 500, flagged=0) == weighted_cost(cheat, 0, 500)  # no measure
    assert weighted_cost(honest, 0, 500, flagged=20) == weighted_cost(honest, 0, 500)
    assert weighted_cost(replace(cheat, est_seconds=31), 0, 500, flagged=7) == 50 * -(
        -31 * 30 // 7
    )  # rounded up, integers only
    a = Auction(demand())
    a.handle(BidArrived(cheat, "cheat", flagged=60), NOW)  # measured faster than it claims
    a.handle(BidArrived(cheat, "liar", flagged=10), NOW)
    a.handle(BidArrived(slow, "slow"), NOW + 1)
    a.handle(BidArrived(honest, "honest"), NOW + 2)
    assert [r.bidder for r in a.bids()] == ["honest", "slow", "cheat", "liar"]
    lone = Auction(demand())
    lone.handle(BidArrived(cheat, "liar", flagged=10), NOW)
    assert lone.on_tick(NOW + 2000) == [SendOrder("liar", cheat)]  # nobody else: still chosen


def test_a_worker_that_already_had_the_task_ranks_after_every_other_bid() -> None:
    a = Auction(demand(), earlier=frozenset({"cheap"}))
    a.handle(BidArrived(bid(price=10), "cheap"), NOW)
    a.handle(BidArrived(bid(price=90), "flagged", flagged=1), NOW)
    a.handle(BidArrived(bid(price=80), "dear"), NOW)
    assert [r.bidder for r in a.bids()] == ["dear", "flagged", "cheap"]
    lone = Auction(demand(), earlier=frozenset({"cheap"}))
    lone.handle(BidArrived(bid(price=10), "cheap"), NOW)
    assert lone.on_tick(NOW + 2000) == [SendOrder("cheap", bid(price=10))]  # still chosen


actions = st.lists(
    st.one_of(
        st.tuples(st.just("bid"), st.integers(0, 5), st.integers(1, 120)),
        st.tuples(st.just("answer"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("tick"), st.integers(0, 1500), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_at_most_one_winner_and_every_run_ends_won_or_closed(script: list) -> None:
    a, now, wins, asked = Auction(demand(), confirm_timeout_ms=300), NOW, 0, set()
    for what, x, y in script:
        if what == "bid":
            effects = a.handle(BidArrived(bid(price=y), f"w{x}"), now)
        elif what == "answer":
            effects = a.handle(OrderAnswered(f"w{x}", y), now)
        else:
            now += x
            effects = a.on_tick(now)
        for e in effects:
            wins += isinstance(e, Won)
            if isinstance(e, SendOrder):
                assert e.bidder not in asked, "asked the same bidder twice"
                asked.add(e.bidder)
    while (deadline := a.next_deadline()) is not None:  # drive to the end with silence
        for e in a.on_tick(deadline):
            assert not isinstance(e, Won)
    assert wins <= 1
    assert a.state in ("won", "closed")
    assert (a.state == "won") == (wins == 1)
