"""The worker's bidder: each row of its decision table, reservations, and a property run."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.kinds import Wei
from consensus.market.bidder import (
    Accept,
    AwardSeen,
    Bidder,
    BidRefused,
    Blocked,
    Capabilities,
    Decline,
    DemandSeen,
    NoBid,
    OrderReceived,
    OwnerActivity,
    Policy,
    Released,
    SendBid,
    TaskEnded,
)
from consensus.market.messages import Award, TaskRef
from consensus.market.spec import Requirements
from tests.unit.market.factories import NOW, REF, demand, order

CAPS = Capabilities(gpu_class="cpu", gpus=2, vram_mb=8000, score=2000, cpu_cores=8,
                    ram_mb=16000, region="eu")  # fmt: skip
GWEI = 10**9  # reasons name amounts in gwei, as a spec's author writes them
POLICY = Policy(price_wei_per_s=50, kinds=frozenset({"exec", "train"}), hold_ms=1000)


def bidder(**policy: object) -> Bidder:
    return Bidder(CAPS, replace(POLICY, **policy))  # type: ignore[arg-type]


def award(ref: TaskRef, worker: str = "other") -> Award:
    return Award(expires_ms=NOW + 1, nonce=bytes(16), ref=ref, worker=worker,
                 price_wei_per_s=Wei(1))  # fmt: skip


def test_a_fitting_demand_gets_a_bid_at_our_price_scaled_by_our_score() -> None:
    b = bidder()
    [effect] = b.handle(DemandSeen(demand(), "req"), NOW)
    assert effect == SendBid("req", ("/ip4/127.0.0.1/tcp/1/p2p/x",), REF, 50, 1, 30)
    assert b.open_bid_gpus() == 1 and b.free_gpus() == 2


@pytest.mark.parametrize(
    ("kwargs", "policy", "reason"),
    [
        ({"kind": "render"}, {}, "kind render not allowed"),
        ({"network": True}, {}, "network not allowed"),
        ({"requirements": Requirements(gpu_class="a100-80g")}, {}, "needs class a100-80g"),
        ({"requirements": Requirements(gpu_count=3)}, {}, "needs 3 GPUs, have 2"),
        ({"requirements": Requirements(vram_mb=48000)}, {}, "needs vram_mb >= 48000, have 8000"),
        ({"requirements": Requirements(min_score=5000)}, {}, "needs score >= 5000"),
        ({"requirements": Requirements(region="us")}, {}, "needs region us, in eu"),
        ({"requirements": Requirements(ram_mb=10**6)}, {}, "needs ram_mb"),
        (
            {"max_price": 49 * GWEI},
            {"price_wei_per_s": 50 * GWEI},
            "our price 50 gwei/s above max 49 gwei/s",
        ),
        (
            {"max_price": 50 * GWEI, "budget": 50 * 29 * GWEI},
            {"price_wei_per_s": 50 * GWEI},
            "estimated cost 1500 gwei for 30 s above the task budget 1450 gwei",
        ),
        ({"window_ms": 0}, {}, "bid window closed"),
    ],
)
def test_every_refusal_has_its_reason(kwargs: dict, policy: dict, reason: str) -> None:
    [effect] = bidder(**policy).handle(DemandSeen(demand(**kwargs), "req"), NOW)
    assert isinstance(effect, NoBid)
    assert reason in effect.reason


def test_only_reasons_of_our_own_are_told_to_the_requester() -> None:
    told = bidder().handle(DemandSeen(demand(kind="render"), "req"), NOW)[0]
    silent = bidder().handle(DemandSeen(demand(max_price=1), "req"), NOW)[0]
    assert isinstance(told, NoBid) and told.tell
    assert isinstance(silent, NoBid) and not silent.tell


def test_idle_only_declines_while_the_owner_works_and_reports_unavailable() -> None:
    b = bidder(idle_only=True)
    b.handle(OwnerActivity(busy=True), NOW)
    assert b.status() == "unavailable"
    [effect] = b.handle(DemandSeen(demand(), "req"), NOW)
    assert isinstance(effect, NoBid) and "owner" in effect.reason
    b.handle(OwnerActivity(busy=False), NOW)
    assert isinstance(b.handle(DemandSeen(demand(), "req"), NOW)[0], SendBid)


def test_open_bids_are_capped_by_overbooking_and_released_by_awards_and_time() -> None:
    b = bidder(overbook=1)
    refs = [TaskRef(job_id=bytes(16), task=i, attempt=0) for i in range(3)]
    effects = [b.handle(DemandSeen(demand(r), "req"), NOW)[0] for r in refs]
    assert [type(e) for e in effects] == [SendBid, SendBid, NoBid]
    assert "enough open bids: 2 GPUs" in effects[2].reason  # type: ignore[union-attr]
    assert b.status() == "available"  # bids hold no GPU
    assert b.handle(AwardSeen(award(refs[0]), "stranger"), NOW) == [], "not its requester's"
    assert b.handle(AwardSeen(award(refs[0]), "req"), NOW) == [Released(refs[0], "lost the award")]
    assert b.open_bid_gpus() == 1
    assert b.on_tick(NOW + 2999) == []
    assert b.on_tick(NOW + 3000) == [Released(refs[1], "no award in time")]
    assert b.free_gpus() == 2 and b.next_deadline() is None


def test_running_tasks_make_the_worker_busy() -> None:
    b = bidder()
    for i in range(2):
        ref = TaskRef(job_id=bytes(16), task=i, attempt=0)
        b.handle(DemandSeen(demand(ref), "req"), NOW)
        assert isinstance(b.handle(OrderReceived(order(ref), "req"), NOW)[0], Accept)
    assert b.status() == "busy"
    [effect] = b.handle(DemandSeen(demand(TaskRef(job_id=bytes(16), task=7, attempt=0)), "r"), NOW)
    assert effect == NoBid(TaskRef(job_id=bytes(16), task=7, attempt=0), "busy: 0 of 1 GPUs free",
                           tell=True)  # fmt: skip


def test_an_order_that_finds_the_gpus_taken_is_declined_and_its_bid_dropped() -> None:
    b = bidder()
    refs = [TaskRef(job_id=bytes(16), task=i, attempt=0) for i in range(3)]
    for ref in refs:
        assert isinstance(b.handle(DemandSeen(demand(ref), "req"), NOW)[0], SendBid)
    assert isinstance(b.handle(OrderReceived(order(refs[0]), "req"), NOW)[0], Accept)
    assert isinstance(b.handle(OrderReceived(order(refs[1]), "req"), NOW)[0], Accept)
    [effect] = b.handle(OrderReceived(order(refs[2]), "req"), NOW)
    assert effect == Decline(refs[2], "busy: 0 of 1 free")
    assert b.open_bid_gpus() == 0


def test_a_task_whose_data_does_not_fit_on_our_disk_gets_no_bid_and_the_requester_is_told() -> None:
    short = DemandSeen(demand(), "req", need_bytes=900_000_001, free_bytes=120_999_999)
    [effect] = bidder().handle(short, NOW)
    assert effect == NoBid(REF, "no room for its data: needs 859 MB, 115 MB free", tell=True)
    fits = DemandSeen(demand(), "req", need_bytes=120 << 20, free_bytes=120 << 20)
    assert isinstance(bidder().handle(fits, NOW)[0], SendBid)
    below_reserve = DemandSeen(demand(), "req", need_bytes=1, free_bytes=-5)
    assert bidder().handle(below_reserve, NOW)[0] == NoBid(
        REF, "no room for its data: needs 1 MB, 0 MB free", tell=True
    )


def test_already_bid_is_not_bid_again() -> None:
    b = bidder()
    b.handle(DemandSeen(demand(), "req"), NOW)
    [effect] = b.handle(DemandSeen(demand(), "req"), NOW)
    assert effect == NoBid(REF, "already bid")


def test_an_order_at_our_price_is_accepted_and_holds_until_the_task_ends() -> None:
    b = bidder()
    b.handle(DemandSeen(demand(), "req"), NOW)
    [effect] = b.handle(OrderReceived(order(), "req"), NOW + 100)
    assert isinstance(effect, Accept)
    assert b.handle(OrderReceived(order(), "req"), NOW + 200)[0] == effect  # idempotent
    assert b.on_tick(NOW + 10**6) == []  # a running task is not a reservation to expire
    assert b.handle(AwardSeen(award(REF, "someone")), NOW) == []
    assert b.running() == [REF]
    assert b.handle(TaskEnded(REF), NOW) == [Released(REF, "task ended")]


def test_orders_below_our_price_or_beyond_capacity_are_declined() -> None:
    b = bidder()
    b.handle(DemandSeen(demand(), "req"), NOW)
    assert b.handle(OrderReceived(order(price=49), "req"), NOW)[0] == Decline(
        REF, "price below our bid"
    )
    other = TaskRef(job_id=bytes(16), task=9, attempt=0)
    assert isinstance(b.handle(OrderReceived(order(other, gpus=1), "req"), NOW)[0], Accept)
    third = TaskRef(job_id=bytes(16), task=10, attempt=0)
    assert isinstance(b.handle(OrderReceived(order(third, gpus=1), "req"), NOW)[0], Accept)
    fourth = TaskRef(job_id=bytes(16), task=11, attempt=0)
    [effect] = b.handle(OrderReceived(order(fourth, gpus=1), "req"), NOW)
    assert isinstance(effect, Decline) and "busy" in effect.reason


def test_a_worker_that_settles_takes_only_tasks_a_contract_pays() -> None:
    b = bidder(settled_only=True)
    unsettled = "the requester does not settle on chain"
    assert b.handle(DemandSeen(demand(), "req"), NOW) == [NoBid(REF, unsettled, tell=True)]
    other = TaskRef(job_id=bytes(16), task=7, attempt=0)
    [bid] = b.handle(DemandSeen(replace(demand(other), settles=True), "req"), NOW)
    assert isinstance(bid, SendBid)
    # the order decides: its chain account is what the vouchers are checked against
    assert b.handle(OrderReceived(order(other), "req"), NOW)[0] == Decline(other, unsettled)
    settled = replace(order(other), requester_address="0x" + "ab" * 20)
    assert isinstance(b.handle(OrderReceived(settled, "req"), NOW)[0], Accept)
    [anyone] = bidder().handle(DemandSeen(demand(), "req"), NOW)  # take_unsettled
    assert isinstance(anyone, SendBid)


def test_a_requester_in_arrears_gets_no_bid_and_its_orders_are_declined() -> None:
    b = bidder()
    b.handle(DemandSeen(demand(), "req"), NOW)  # bid before the requester fell behind
    addr = "0x" + "ab" * 20
    assert b.handle(Blocked({"req": "requester in arrears", addr: "by address"}), NOW) == []
    other = TaskRef(job_id=bytes(16), task=7, attempt=0)
    assert b.handle(DemandSeen(demand(other), "req"), NOW) == [
        NoBid(other, "requester in arrears", tell=True)
    ]
    assert b.handle(OrderReceived(order(), "req"), NOW)[0] == Decline(REF, "requester in arrears")
    assert b.open_bid_gpus() == 0, "the reservation went with the decline"
    # the same account from another peer id is known by the address on its order
    by_address = replace(order(other), requester_address="0x" + "AB" * 20)
    assert b.handle(OrderReceived(by_address, "req2"), NOW)[0] == Decline(other, "by address")
    b.handle(Blocked({}), NOW)
    assert isinstance(b.handle(OrderReceived(order(other), "req"), NOW)[0], Accept)


events = st.one_of(
    st.builds(lambda t: ("demand", t), st.integers(0, 4)),
    st.builds(lambda t: ("order", t), st.integers(0, 4)),
    st.builds(lambda t: ("award", t), st.integers(0, 4)),
    st.builds(lambda t: ("end", t), st.integers(0, 4)),
    st.builds(lambda d: ("tick", d), st.integers(0, 5000)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=40))
def test_capacity_is_never_overcommitted_and_every_hold_is_released(script: list) -> None:
    b, now = bidder(), NOW
    held: set[TaskRef] = set()
    for what, arg in script:
        ref = TaskRef(job_id=bytes(16), task=arg if what != "tick" else 0, attempt=0)
        if what == "tick":
            now += arg
            effects = b.on_tick(now)
        elif what == "demand":
            effects = b.handle(DemandSeen(demand(ref), "req"), now)
        elif what == "order":
            effects = b.handle(OrderReceived(order(ref), "req"), now)
        elif what == "award":
            effects = b.handle(AwardSeen(award(ref), "req"), now)
        else:
            effects = b.handle(TaskEnded(ref), now)
        for e in effects:
            if isinstance(e, SendBid | Accept):
                held.add(e.ref if isinstance(e, SendBid) else e.order.ref)
            if isinstance(e, Released | Decline):
                held.discard(e.ref)  # a declined order drops its bid's reservation
        assert 0 <= b.free_gpus() <= CAPS.gpus
    # every reservation ends: awards, timeouts or task ends release all of them
    for ref in b.running():
        assert b.handle(TaskEnded(ref), now) == [Released(ref, "task ended")]
        held.discard(ref)
    released = b.on_tick(now + 10**9)
    held -= {e.ref for e in released if isinstance(e, Released)}
    assert b.free_gpus() == CAPS.gpus and not held


def test_a_refused_bid_releases_its_reservation_but_not_a_running_task() -> None:
    b = bidder()
    b.handle(DemandSeen(demand(), "req"), NOW)
    assert b.handle(BidRefused(REF), NOW) == [Released(REF, "bid refused")]
    b.handle(OrderReceived(order(), "req"), NOW)
    assert b.handle(BidRefused(REF), NOW) == []
