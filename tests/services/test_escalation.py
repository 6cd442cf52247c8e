"""A cross-class miss on real services: two sentries (node.verify.sentry), the requester's
verdicts service (node.verify.requester), real sqlite, the in-memory network, trio's mock
clock. The worker is a stand-in that attests and answers challenges from its checkpoint files.

The assigned sentry replays in another determinism class (its runtime's states differ from
the worker's, as another device's would) and escalates; a sentry of the worker's class that
was not assigned answers bitwise: an honest run is verified, a faked segment is rejected and
its fail (only the same-class one) is offered for slashing. With no same-class sentry the
attempt is accepted after the verdict timeout, saying why, and nobody's reputation moves.

A sentry whose runtime measures distances (a stand-in: its rounding is a fixed number of ppm
off the worker's state) asks for the segments' end files, passes an honest run within the
tolerance without escalating, and still escalates a faked segment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import pytest
import trio
import trio.testing
from blake3 import blake3

from config.schema import VerifySettings
from consensus.kinds import from_wire, to_wire
from consensus.market.messages import Workload
from consensus.verify import seed as sd
from consensus.verify import tree
from consensus.verify.escalation import NO_SAME_CLASS
from consensus.verify.messages import Attestation, ChallengeRequest
from consensus.verify.verdicts import REP_START
from gpu.runtime import RunSpec
from node.cli_job import _human_job
from node.market.blobshare import BlobShare
from node.verify import worker as verify_worker
from node.verify.devices import ReplayDevices
from node.verify.escalations import EVERY_MS
from node.verify.play import answer_from
from node.verify.requester import Verdicts
from node.verify.sentry import Sentry, task_key
from node.verify.store import VerifyStore
from node.verify.topics import ATTESTS, CHALLENGE, ESCALATIONS
from node.verify.view import verification_view
from node.verify.worker import VerifyWorker
from storage.blobs import BlobStore
from tests.services.memnet import Hub, MemNet
from tests.services.sim import InlineDatabase
from tests.unit.verify.factories import REF

SEGMENTS = 4
WORKER_CLASS = "cpu|py3.11|torch-2"
OTHER_CLASS = "h100|py3.11|torch-2"
TIMEOUT_MS = 60_000
SETTINGS = VerifySettings(sample_size=SEGMENTS, commit_window_ms=300, reveal_window_ms=300,
                          challenge_deadline_ms=5_000, verdict_timeout_ms=TIMEOUT_MS,
                          bisect_timeout_ms=2 * TIMEOUT_MS)  # fmt: skip
CPU_ELSEWHERE = "cpu|py3.12|torch-2"  # another CPU class, the same generators: bisected


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    # 0.1 s of real time idle before the clock jumps: a thread (sqlite, a blob sealed) on a
    # loaded machine can take 10 ms, and a jump then would pass deadlines it is racing
    return trio.testing.MockClock(autojump_threshold=0.1)


def step(state: bytes, index: int) -> bytes:
    """One segment's work: the next checkpoint file from the one before."""
    return blake3(state + index.to_bytes(4, "big")).digest() * 4


class Runtime:
    """Replays a segment from its start file; ``device`` salts the state, as another device's
    rounding would (an empty one replays exactly as the worker ran)."""

    kinds = frozenset({"train"})

    def __init__(self, device: bytes = b"") -> None:
        self.device, self.replays = device, 0

    def state(self, spec: RunSpec) -> bytes:
        start = b"genesis" if spec.resume is None else spec.resume.read_bytes()
        return step(start, spec.resume_index + 1) + self.device

    async def replay(self, spec: RunSpec, on_log: Any, gpus: tuple[int, ...] = ()) -> bytes:
        self.replays += 1
        return blake3(self.state(spec)).digest()


ROUNDING_PPM = 40  # the measuring stand-in's distance from the worker's honest state
FAR = 1_000_000


class Measuring(Runtime):
    """A runtime that measures distances: its own rounding (``device``) of the worker's state
    is :data:`ROUNDING_PPM` off it; any other state (another computation) is :data:`FAR`."""

    def __init__(self, device: bytes = b"") -> None:
        super().__init__(device)
        self.measured: list[int] = []

    async def replay(
        self, spec: RunSpec, on_log: Any, gpus: tuple[int, ...] = (), keep_as: Path | None = None
    ) -> bytes:
        if keep_as is not None:
            keep_as.write_bytes(self.state(spec))
        return await super().replay(spec, on_log, gpus)

    async def distance(self, workdir: Path, replayed: Path, claimed: bytes, on_log: Any) -> int:
        ppm = ROUNDING_PPM if replayed.read_bytes() == claimed + self.device else FAR
        self.measured.append(ppm)
        return ppm


@dataclass
class Worker:
    """Attests ``files`` and answers challenges from them (``fake``: a segment it skipped)."""

    net: MemNet
    files: list[bytes]

    @classmethod
    def make(cls, hub: Hub, fake: int | None = None) -> Worker:
        files, state = [], b"genesis"
        for i in range(SEGMENTS):
            state = b"skipped" * 8 if i == fake else step(state, i)
            files.append(state)
        worker = cls(MemNet(hub, nacl.signing.SigningKey.generate()), files)
        worker.net.serve(CHALLENGE, worker.answer)
        return worker

    @property
    def hashes(self) -> list[bytes]:
        return [blake3(f).digest() for f in self.files]

    def attestation(self) -> Attestation:
        leaves = tree.chain_leaves(self.hashes)
        return Attestation(
            expires_ms=self.net.now_ms() + 600_000, nonce=b"n" * 16, ref=REF,
            worker=self.net.peer_id, root=tree.root(leaves), segments=SEGMENTS,
            result_hash=self.hashes[-1], seconds=60, runtime="train", det_class=WORKER_CLASS,
            workload=Workload(kind="train", segments=SEGMENTS), listen=self.net.addrs(),
        )  # fmt: skip

    async def answer(self, peer: str, payload: Any) -> Any:
        req = from_wire(ChallengeRequest, payload["request"], "request")
        reply = answer_from(self.attestation(), self.hashes, self.files.__getitem__, req.index,
                            with_end=req.with_end)  # fmt: skip
        return to_wire(reply)


@dataclass
class Net:
    hub: Hub
    worker: Worker
    requester: Verdicts
    sentries: dict[str, Sentry]  # class label -> sentry
    runtimes: dict[str, Runtime]


@asynccontextmanager
async def network(
    tmp_path: Path,
    classes: list[str],
    fake: int | None = None,
    repeat_ms: int = EVERY_MS,
    runtime: type[Runtime] = Runtime,
) -> AsyncIterator[Net]:
    """The worker, the requester and one sentry per entry of ``classes``, each with a
    ``runtime``; the first is the one assigned to the task (sentries_per_task = 1).
    Escalations are said again every ``repeat_ms``."""
    hub = Hub()
    worker = Worker.make(hub, fake)
    nets = [MemNet(hub, nacl.signing.SigningKey.generate()) for _ in classes]
    ids = [n.peer_id for n in nets]
    [chosen] = sd.assigned(task_key(REF), ids, 1)
    nets.sort(key=lambda n: n.peer_id != chosen)  # the assigned one first
    async with trio.open_nursery() as nursery:
        dbs = [await InlineDatabase.open(tmp_path / f"{i}.db") for i in range(len(classes) + 1)]
        requester = Verdicts(MemNet(hub, nacl.signing.SigningKey.generate()), VerifyStore(dbs[0]),
                             1, lambda: True, ids.__contains__)  # fmt: skip
        await nursery.start(requester.run)
        sentries, runtimes = {}, {}
        for net, db, label in zip(nets, dbs[1:], classes, strict=True):
            replays = runtime(b"" if label == WORKER_CLASS else label.encode())
            sentry = Sentry(net, VerifyStore(db), None, SETTINGS, {"train": replays},  # type: ignore[arg-type]
                            lambda: ids, ReplayDevices({label: ()}, label),
                            tmp_path / f"scratch-{label}")  # fmt: skip
            sentry.desk.every_ms = repeat_ms
            await nursery.start(sentry.run)
            sentries[label], runtimes[label] = sentry, replays
        try:
            yield Net(hub, worker, requester, sentries, runtimes)
        finally:
            nursery.cancel_scope.cancel()
            for db in dbs:
                await db.close()


async def test_a_same_class_sentry_answers_and_an_honest_run_is_verified(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, WORKER_CLASS]) as net:
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        outcome = await net.requester.outcome(REF, TIMEOUT_MS)
        assert outcome == ("verified", "verified by 1 sentries")
        [verdict] = await net.requester.store.verdicts(REF)
        assert verdict["sentry"] == net.sentries[WORKER_CLASS].net.peer_id and verdict["passed"]
        assert verdict["reason"].startswith("same-class replay of escalated segments [0, 1, 2, 3]")
        [escalated] = await net.requester.store.escalations(REF)
        assert escalated["sentry"] == net.sentries[OTHER_CLASS].net.peer_id
        assert escalated["segments"] == [0, 1, 2, 3]
        assert net.runtimes[OTHER_CLASS].replays == SEGMENTS == net.runtimes[WORKER_CLASS].replays


async def test_a_faked_segment_fails_on_the_answer_and_only_that_fail_may_slash(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, WORKER_CLASS], fake=2) as net:
        signed: list[tuple[str, bool]] = []
        for label, sentry in net.sentries.items():
            sentry.slash_signer = lambda _a, _i, *, bitwise, who=label: signed.append(
                (who, bitwise)
            )
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        outcome, why = await net.requester.outcome(REF, TIMEOUT_MS)
        assert outcome == "rejected" and "escalated segments [0, 1, 2, 3]: segment 2" in why, why
        assert net.requester.excluded(REF, net.worker.net.peer_id)
        assert signed == [(WORKER_CLASS, True)], "the cross-class sentry published no fail"
        rows = await net.requester.store.verdicts(REF)
        assert [r["sentry"] for r in rows] == [net.sentries[WORKER_CLASS].net.peer_id]


async def test_without_a_same_class_sentry_even_a_faked_run_is_accepted_saying_why(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, OTHER_CLASS + "-b"], fake=2) as net:
        sentry = net.sentries[OTHER_CLASS]
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        started = trio.current_time()
        outcome, why = await net.requester.outcome(REF, TIMEOUT_MS)
        assert outcome == "accepted" and why.startswith(NO_SAME_CLASS), why
        assert trio.current_time() - started >= TIMEOUT_MS / 1000
        assert await net.requester.store.verdicts(REF) == []
        assert not await sentry.holds(REF), "settlement pays once the verdict timeout passed"
        store = net.requester.store
        assert await store.reputation(net.worker.net.peer_id) == REP_START
        attempt = {"idx": 0, "attempt": 0, "worker": net.worker.net.peer_id, "outcome": why}
        view = await verification_view(store.db, REF.job_id, {"kind": "train"}, [], [attempt],
                                       sample_size=SEGMENTS)  # fmt: skip
        [shown] = view["escalations"]
        assert shown["sentry"] == sentry.net.peer_id and shown["segments"] == [0, 1, 2, 3]
        text = _human_job({"job_id": "j", "kind": "train", "state": "verified", "task_states": [],
                           "cost_wei": "0", "verification": view})  # fmt: skip
        assert f"ESCALATED {net.worker.net.peer_id[-12:]}" in text and NO_SAME_CLASS in text


async def test_a_miss_that_will_be_bisected_is_waited_for_and_held_longer(
    autojump_clock: object, tmp_path: Path
) -> None:
    """A CPU sentry of another class shares the worker's generators, so its miss will be
    bisected: the requester waits the bisection timeout beyond the verdict timeout, and
    settlement holds the payment as long. (This sentry's runtime does not bisect, so nothing
    comes, and the attempt is then accepted as any unanswered escalation is.)"""
    async with network(tmp_path, [CPU_ELSEWHERE], fake=2) as net:
        net.requester.bisect_timeout_ms = SETTINGS.bisect_timeout_ms
        sentry = net.sentries[CPU_ELSEWHERE]
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        started, got = trio.current_time(), []

        async def wait() -> None:
            got.append(await net.requester.outcome(REF, TIMEOUT_MS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep((TIMEOUT_MS + SETTINGS.bisect_timeout_ms / 2) / 1000)
            assert not got, "still waiting past the verdict timeout"
            assert await sentry.holds(REF), "settlement holds it meanwhile"
        [(outcome, why)] = got
        waited_ms = TIMEOUT_MS + SETTINGS.bisect_timeout_ms
        assert outcome == "accepted" and f"within {waited_ms} ms" in why, why
        assert trio.current_time() - started >= waited_ms / 1000
        assert not await sentry.holds(REF), "then paid"


async def escalated_at(store: VerifyStore) -> None:
    """Polls the requester's store until an escalation of the task is kept."""
    with trio.fail_after(TIMEOUT_MS / 1000):
        while not await store.escalations(REF):
            await trio.sleep(0.1)


async def test_an_escalation_heard_before_its_attestation_waits_for_it(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, WORKER_CLASS], repeat_ms=10**9) as net:
        same = net.sentries[WORKER_CLASS]
        att = net.worker.attestation()
        cut = net.hub.subscribers[ATTESTS].pop(same.net.peer_id)  # its gossip is lost
        await net.worker.net.publish(ATTESTS, att)
        await escalated_at(net.requester.store)
        with trio.fail_after(1):
            while not same.desk.early:  # heard, waiting for the attestation
                await trio.sleep(0.01)
        net.hub.subscribers[ATTESTS][same.net.peer_id] = cut
        await net.worker.net.publish(ATTESTS, att)  # the worker says it again (its announcer)
        assert await net.requester.outcome(REF, TIMEOUT_MS) == (
            "verified",
            "verified by 1 sentries",
        )


async def test_an_escalation_is_said_again_until_a_verdict_answers_it(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, WORKER_CLASS]) as net:
        same = net.sentries[WORKER_CLASS]
        cut = net.hub.subscribers[ESCALATIONS].pop(same.net.peer_id)
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        await escalated_at(net.requester.store)
        net.hub.subscribers[ESCALATIONS][same.net.peer_id] = cut  # back, the first one lost
        started = trio.current_time()
        assert await net.requester.outcome(REF, TIMEOUT_MS) == (
            "verified",
            "verified by 1 sentries",
        )
        assert trio.current_time() - started <= EVERY_MS / 1000 + 5, "the next repeat did it"
        assert net.sentries[OTHER_CLASS].desk.ours == {}, "answered: no more repeats"


async def test_a_cross_class_replay_within_tolerance_passes_without_escalating(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS], runtime=Measuring) as net:
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        outcome = await net.requester.outcome(REF, TIMEOUT_MS)
        assert outcome == ("verified", "verified by 1 sentries")
        [verdict] = await net.requester.store.verdicts(REF)
        assert verdict["sentry"] == net.sentries[OTHER_CLASS].net.peer_id and verdict["passed"]
        assert await net.requester.store.escalations(REF) == []
        measuring = net.runtimes[OTHER_CLASS]
        assert isinstance(measuring, Measuring)
        assert measuring.measured == [ROUNDING_PPM] * SEGMENTS < [SETTINGS.tolerance_ppm] * 4


async def test_a_faked_segment_is_still_a_cross_class_miss_and_escalates_alone(
    autojump_clock: object, tmp_path: Path
) -> None:
    async with network(tmp_path, [OTHER_CLASS, WORKER_CLASS], fake=2, runtime=Measuring) as net:
        await net.worker.net.publish(ATTESTS, net.worker.attestation())
        outcome, why = await net.requester.outcome(REF, TIMEOUT_MS)
        assert outcome == "rejected" and "escalated segments [2]: segment 2" in why, why
        [escalated] = await net.requester.store.escalations(REF)
        assert escalated["sentry"] == net.sentries[OTHER_CLASS].net.peer_id
        assert escalated["segments"] == [2], "the honest segments passed within tolerance"
        measured = net.runtimes[OTHER_CLASS].measured  # type: ignore[attr-defined]
        assert sorted(measured) == [ROUNDING_PPM] * 3 + [FAR], "3 continues from the fake"


async def test_a_sentry_that_withholds_its_seed_reveal_loses_reputation(
    autojump_clock: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two sentries share the seed; one commits and stays silent at the reveal (it could pick
    between two seeds that way): the seed forms without it, the task is verified, and the
    honest sentry records the withholding against the silent one's reputation."""
    hub = Hub()
    worker = Worker.make(hub)
    nets = [MemNet(hub, nacl.signing.SigningKey.generate()) for _ in range(2)]
    ids = [n.peer_id for n in nets]
    honest_net, silent_net = nets
    real_publish = silent_net.publish

    async def no_reveals(topic: str, body: Any) -> None:
        if type(body).__name__ != "SeedReveal":
            await real_publish(topic, body)

    silent_net.publish = no_reveals  # type: ignore[method-assign]
    two = dataclasses.replace(SETTINGS, sentries_per_task=2)
    async with trio.open_nursery() as nursery:
        dbs = [await InlineDatabase.open(tmp_path / f"{i}.db") for i in range(3)]
        requester = Verdicts(MemNet(hub, nacl.signing.SigningKey.generate()), VerifyStore(dbs[0]),
                             1, lambda: True, ids.__contains__)  # fmt: skip
        await nursery.start(requester.run)
        stores = [VerifyStore(db) for db in dbs[1:]]
        for net, store in zip(nets, stores, strict=True):
            sentry = Sentry(net, store, None, two, {"train": Runtime(b"")},  # type: ignore[arg-type]
                            lambda: ids, ReplayDevices({WORKER_CLASS: ()}, WORKER_CLASS),
                            tmp_path / f"scratch-{net.peer_id[-6:]}")  # fmt: skip
            await nursery.start(sentry.run)
        await worker.net.publish(ATTESTS, worker.attestation())
        outcome = await requester.outcome(REF, TIMEOUT_MS)
        assert outcome[0] == "verified", outcome
        with trio.fail_after(TIMEOUT_MS / 1000):  # the honest one waits out the reveal window
            while len(await requester.store.verdicts(REF)) < 2:
                await requester.changed.wait()
        assert await stores[0].reputation(silent_net.peer_id) < REP_START
        assert await stores[0].reputation(honest_net.peer_id) == REP_START, "it did reveal"
        assert "seed reveal withheld" in caplog.text
        nursery.cancel_scope.cancel()
    for db in dbs:
        await db.close()


@pytest.mark.parametrize("serves", [True, False])
async def test_big_checkpoint_files_go_by_reference(
    autojump_clock: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serves: bool
) -> None:
    """A real VerifyWorker answers with its checkpoint files by reference when they are over
    the inline limit (0 here: every file); the sentry fetches them over the blob protocol and
    verifies the task. A worker that names a file and then does not serve it fails."""
    monkeypatch.setattr(verify_worker, "INLINE_MAX_BYTES", 0)
    hub, key = Hub(), nacl.signing.SigningKey.generate()
    files = Worker.make(hub).files
    worker = Worker(MemNet(hub, key), files)
    share = BlobShare(worker.net, BlobStore(tmp_path / "w" / "blobs"), tmp_path / "w" / "s", key)
    share.register()
    blobs = []
    for i, data in enumerate(files):
        (tmp_path / f"seg-{i}").write_bytes(data)
        blobs.append((await share.put(tmp_path / f"seg-{i}")).hash)
    if not serves:
        share.grant = lambda _peer, _digest: None  # type: ignore[method-assign]
    skey = nacl.signing.SigningKey.generate()
    snet = MemNet(hub, skey)
    sentry_share = BlobShare(snet, BlobStore(tmp_path / "s" / "blobs"), tmp_path / "s" / "s", skey)
    sentry_share.register()
    async with trio.open_nursery() as nursery:
        dbs = [await InlineDatabase.open(tmp_path / f"{i}.db") for i in range(3)]
        att = worker.attestation()
        segments = list(zip(worker.hashes, blobs, strict=True))
        await VerifyStore(dbs[2]).keep_attestation(REF, msgpack.packb(to_wire(att)), segments, 0)
        VerifyWorker(worker.net, VerifyStore(dbs[2]), share, WORKER_CLASS, None).register()  # type: ignore[arg-type]
        requester = Verdicts(MemNet(hub, nacl.signing.SigningKey.generate()), VerifyStore(dbs[0]),
                             1, lambda: True, [snet.peer_id].__contains__)  # fmt: skip
        await nursery.start(requester.run)
        devices = ReplayDevices({WORKER_CLASS: ()}, WORKER_CLASS)
        sentry = Sentry(snet, VerifyStore(dbs[1]), sentry_share, SETTINGS,  # type: ignore[arg-type]
                        {"train": Runtime(b"")}, lambda: [snet.peer_id], devices,
                        tmp_path / "scratch")  # fmt: skip
        await nursery.start(sentry.run)
        await worker.net.publish(ATTESTS, att)
        outcome, why = await requester.outcome(REF, TIMEOUT_MS)
        if serves:
            assert outcome == "verified", why
            assert any(sentry_share.store.has(b.hex()) for b in blobs), "fetched by reference"
        else:
            assert outcome == "rejected", why
        nursery.cancel_scope.cancel()
    for db in dbs:
        await db.close()
