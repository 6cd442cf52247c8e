"""The small records long-running services keep per probe, escalation, task or peer stay
bounded, and inside their horizons answer as before.

A worker's probe counts, a sentry's answered escalations, a requester's refused workers and
peers' addresses, a worker's requesters' addresses and the relay's known non-relays: each is
driven past its retention or cap on a driven clock (or none), and what is still needed is
checked to give the same answer as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from config.schema import VerifySettings
from consensus.kinds import to_wire
from consensus.market.messages import TaskRef
from consensus.verify.messages import Attestation, Escalation, ProbeRequest, attestation_id
from node.market import requester as rq
from node.market import worker as wk
from node.sweep import Throttle
from node.verify import probe_worker as pw
from node.verify.devices import ReplayDevices
from node.verify.escalations import HEARD_KEPT, INBOX_GRACE_MS, SWEEP_MS, EscalationDesk
from p2p import relay as rl
from p2p.reqresp import RequestRejected
from tests.services.memnet import Hub
from tests.services.sim import inline_threads, make_node, worker_service
from tests.unit.market.factories import demand
from tests.unit.verify.factories import REF
from tests.unit.verify.test_escalation import ATT, message
from tests.unit.verify.test_sentry_memory import Clock as SentryClock

T0 = 10**12
VERDICT_MS = 120_000


class Clock(SentryClock):
    def __init__(self) -> None:
        self.now = T0

    def blame(self, _peer: str, _why: str) -> None:
        raise AssertionError("nothing here is blamed")


def test_a_throttle_is_due_at_the_first_reading_then_once_a_period() -> None:
    sweeps = Throttle(60_000)
    assert [sweeps.due(t) for t in (T0, T0 + 59_999, T0 + 60_000, T0 + 60_001)] == [
        True, False, True, False,
    ]  # fmt: skip


# --- the worker's probe answers -----------------------------------------------------------


def answerer() -> pw.ProbeAnswerer:
    """An answerer whose every probe checks out (one bisection: 2 answers per segment) and
    whose replays fail after the count: the limit's answer is all that is looked at."""
    a = pw.ProbeAnswerer(None, None, None, {}, lambda _c: (), Path("unused"),  # type: ignore[arg-type]
                         lambda _peer: True)  # fmt: skip

    async def attested(_req: ProbeRequest) -> tuple[Any, bytes, Any, int]:
        return None, b"", None, 1

    async def replay(*_args: Any) -> None:
        raise RequestRejected("unavailable", "not replayed here")

    a._attested = attested  # type: ignore[method-assign, assignment]
    a._replay = replay  # type: ignore[method-assign, assignment]
    return a


async def probe(a: pw.ProbeAnswerer, index: int) -> str:
    """The refusal's code: "unavailable" for a probe let through to its replay."""
    req = ProbeRequest(ref=REF, attestation=b"a" * 32, index=index, step=1)
    with pytest.raises(RequestRejected) as refused:
        await a._on_probe("sentry", {"request": to_wire(req)})
    return refused.value.code


async def test_probe_counts_go_oldest_first_past_the_cap_and_the_rest_still_limit() -> None:
    a = answerer()
    assert [await probe(a, 0) for _ in range(3)] == ["unavailable", "unavailable", "limit"]
    for index in range(1, pw.ANSWERED_KEPT + 1):
        await probe(a, index)
    assert len(a.answered) == pw.ANSWERED_KEPT
    assert await probe(a, pw.ANSWERED_KEPT) == "unavailable", "its second answer"
    assert await probe(a, pw.ANSWERED_KEPT) == "limit", "a kept count still limits"
    assert await probe(a, 0) == "unavailable", "the first probed went first"


# --- the sentry's answered escalations ------------------------------------------------------


@dataclass
class Desk:
    clock: Clock
    desk: EscalationDesk
    answers: list[bytes]


def desk() -> Desk:
    clock, answers = Clock(), []

    async def answer(att: Attestation, _up: Escalation) -> None:
        answers.append(attestation_id(att))

    class Store:
        async def add_escalation(self, *_args: Any, **_kw: Any) -> None:
            pass

    settings = VerifySettings(verdict_timeout_ms=VERDICT_MS)
    d = EscalationDesk(clock, Store(), settings, ReplayDevices({ATT.det_class: ()}, ATT.det_class),  # type: ignore[arg-type]
                       lambda: ["s"], answer, lambda _att: False)  # fmt: skip
    return Desk(clock, d, answers)


UP = message()


def attested(task: int, expires_ms: int) -> Attestation:
    return replace(ATT, ref=replace(ATT.ref, task=task), expires_ms=expires_ms)


def escalated(task: int, expires_ms: int) -> tuple[Attestation, Escalation]:
    att = attested(task, expires_ms)
    return att, replace(UP, ref=att.ref, attestation=attestation_id(att))


async def hear_and_take(d: Desk, att: Attestation, up: Escalation) -> None:
    async with trio.open_nursery() as nursery:  # until the answer (if any) is made
        await d.desk.heard_attestation(att, nursery)
        await d.desk._take("s", up, b"raw", nursery)


async def test_an_answered_id_is_kept_while_an_escalation_of_it_could_be_answered() -> None:
    d = desk()
    expires = T0 + 10 * 60_000
    att, up = escalated(0, expires)
    await hear_and_take(d, att, up)
    assert d.answers == [attestation_id(att)]

    # the attestation forgotten among many heard, then heard again just before it expires
    async with trio.open_nursery() as nursery:
        for task in range(1, HEARD_KEPT + 2):
            await d.desk.heard_attestation(attested(task, expires), nursery)
    assert attestation_id(att) not in d.desk.heard
    d.clock.now = expires + INBOX_GRACE_MS - 1
    await hear_and_take(d, *escalated(10_001, expires + 10 * 60_000))  # answers one: a sweep
    await hear_and_take(d, att, up)
    d.clock.now += VERDICT_MS - 1
    await hear_and_take(d, *escalated(10_002, expires + 10 * 60_000))
    await hear_and_take(d, att, up)
    assert d.answers.count(attestation_id(att)) == 1, "not answered twice in its horizon"

    d.clock.now = expires + INBOX_GRACE_MS + VERDICT_MS + SWEEP_MS
    await hear_and_take(d, *escalated(10_003, d.clock.now + 10 * 60_000))
    assert attestation_id(att) not in d.desk.answered, "past it, forgotten"
    await hear_and_take(d, att, up)
    assert d.answers.count(attestation_id(att)) == 1, "and still not answered: too late"
    assert len(d.desk.answered) == 3


# --- the requester's job manager ------------------------------------------------------------


def manager(tmp_path: Path) -> rq.JobManager:
    return rq.JobManager(None, None, None, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("cancelled", [False, True])
async def test_a_tasks_refused_workers_go_when_its_runner_ends(
    tmp_path: Path, cancelled: bool
) -> None:
    mgr, ref = manager(tmp_path), TaskRef(job_id=b"j" * 16, task=3, attempt=0)
    mgr.refuse(ref, "cheat")
    mgr.refuse(replace(ref, task=4), "cheat")
    seen: list[bool] = []
    scope = trio.CancelScope()

    class Runner:
        job, idx = SimpleNamespace(job_id=ref.job_id), ref.task

        async def run(self) -> None:
            seen.append("cheat" in mgr._refused[(ref.job_id, ref.task)])
            if cancelled:  # as cancel_task does
                scope.cancel()
                await trio.sleep_forever()

    await mgr._run_runner(Runner(), scope)  # type: ignore[arg-type]
    assert seen == [True], "kept while the task's auctions may open"
    assert list(mgr._refused) == [(ref.job_id, 4)], "only the ended task's went"


def test_peers_addresses_go_the_longest_unheard_first_past_the_cap(tmp_path: Path) -> None:
    mgr = manager(tmp_path)
    for i in range(rq.ADDRS_KEPT):
        mgr.remember_addrs(f"w{i}", [f"/ip4/10.0.0.1/tcp/{i}"])
    mgr.remember_addrs("w0", ["/ip4/10.0.0.2/tcp/1"])  # heard again: now the latest
    mgr.remember_addrs("new", ["/ip4/10.0.0.3/tcp/1"])
    assert len(mgr._peer_addrs) == rq.ADDRS_KEPT
    assert mgr.addrs_of("w1") == [], "the longest unheard went"
    assert mgr.addrs_of("w0") == ["/ip4/10.0.0.2/tcp/1"]
    assert mgr.addrs_of("new") == ["/ip4/10.0.0.3/tcp/1"]


# --- the worker's requesters' addresses -----------------------------------------------------


async def test_requesters_addresses_from_demands_go_the_longest_unheard_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_threads(monkeypatch)
    node = await make_node(Hub(), tmp_path, "worker")
    service = worker_service(node, 100, segment_s=1.0)
    closed = replace(demand(), bid_until_ms=0)  # no bid, no pass: only its addresses count

    def heard(origin: str) -> Any:
        body = replace(closed, reply_to=[f"/ip4/10.0.0.1/tcp/1/p2p/{origin}"])
        return SimpleNamespace(origin=origin, opened=SimpleNamespace(body=body))

    async def demands() -> Any:
        for i in range(wk.ADDRS_KEPT):
            yield heard(f"r{i}")
        yield heard("r0")  # demands again: now the latest
        yield heard("new")

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await service._follow_demands(demands())
        nursery.cancel_scope.cancel()
    await node.db.close()
    assert len(service._addrs) == wk.ADDRS_KEPT
    assert service._addrs_of("r1") == [], "the longest unheard went"
    assert service._addrs_of("r0") == ["/ip4/10.0.0.1/tcp/1/p2p/r0"]
    assert service._addrs_of("new") == ["/ip4/10.0.0.1/tcp/1/p2p/new"]


# --- the relay's known non-relays ----------------------------------------------------------


async def test_known_non_relays_go_first_found_first_and_only_those_are_asked_again() -> None:
    peers = [ID(f"peer {i}".encode()).to_base58() for i in range(rl.NOT_RELAYS_KEPT + 1)]
    connected: list[str] = peers
    asked: list[str] = []

    class Discovery:
        def __init__(self) -> None:
            self._protocol_cache: dict[ID, set[str]] = {}

        async def discover_relays(self) -> None:
            pass

        def get_relays(self) -> list[ID]:
            return []

    host = SimpleNamespace(connected_peers=lambda: connected,
                           libp2p=SimpleNamespace(get_peerstore=lambda: None))  # fmt: skip
    relay = rl.Relay(host, None, Discovery())  # type: ignore[arg-type]

    async def serves_hop(peer: ID) -> bool:
        asked.append(peer.to_base58())
        return False

    relay._serves_hop = serves_hop  # type: ignore[method-assign]
    await relay.find_relays()
    assert asked == peers and len(relay._not_relays) == rl.NOT_RELAYS_KEPT
    asked.clear()
    connected = [peers[0], peers[-1]]
    await relay.find_relays()
    assert asked == [peers[0]], "the first found went: asked again; the last is still known"
