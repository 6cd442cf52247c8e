"""A worker's attestation said again until sentries judge it, over the in-memory network under
trio's mock clock: a sentry that missed the first gossip (cut off, or not yet listening) still
gets it; a quorum of sentries' verdicts stops the repeats; nobody else's verdict does."""

from __future__ import annotations

import os

import nacl.signing
import trio
import trio.testing

from consensus.verify.messages import Attestation, Verdict, attestation_id
from node.verify.announcer import AttestationAnnouncer
from node.verify.topics import ATTESTS, VERDICTS
from tests.services.memnet import Hub, MemNet
from tests.unit.verify.factories import honest

EVERY_MS, FOR_MS = 5_000, 60_000


def net(hub: Hub) -> MemNet:
    return MemNet(hub, nacl.signing.SigningKey.generate())


def attestation_of(worker: MemNet, segments: int) -> tuple[bytes, Attestation]:
    att = honest(segments).attestation(worker=worker.peer_id, expires_ms=worker.now_ms() + 600_000)
    return attestation_id(att), att


def verdict_on(att: Attestation, ident: bytes) -> Verdict:
    return Verdict(
        expires_ms=att.expires_ms, nonce=os.urandom(16), ref=att.ref, worker=att.worker,
        attestation=ident, passed=True, sampled=[0], seed=b"s" * 32, evidence=b"e" * 32,
    )  # fmt: skip


async def heard(inbox: trio.MemoryReceiveChannel, within_ms: int) -> int:
    """How many attestations arrive in ``inbox`` within ``within_ms`` of mock time."""
    count = 0
    with trio.move_on_after(within_ms / 1000):
        async for _ in inbox:
            count += 1
    return count


async def test_a_late_sentry_gets_it_and_a_quorum_of_verdicts_stops_it(
    autojump_clock: object,
) -> None:
    hub = Hub()
    worker, sentry_a, sentry_b, stranger = net(hub), net(hub), net(hub), net(hub)
    sentries = {sentry_a.peer_id, sentry_b.peer_id}
    ident, att = attestation_of(worker, 3)
    announcer = AttestationAnnouncer(worker, sentries.__contains__, 2, EVERY_MS, FOR_MS)
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        await announcer.announce(ident, att)  # nobody listens yet: lost
        inbox = await sentry_a.subscribe(ATTESTS, frozenset({Attestation.KIND}))
        assert await heard(inbox, EVERY_MS + 100) == 1  # said again

        await stranger.publish(VERDICTS, verdict_on(att, ident))  # not a sentry: no effect
        await sentry_a.publish(VERDICTS, verdict_on(att, ident))  # one of a quorum of two
        assert await heard(inbox, 2 * EVERY_MS) == 2
        await sentry_b.publish(VERDICTS, verdict_on(att, ident))
        await trio.testing.wait_all_tasks_blocked()
        assert ident not in announcer.pending
        assert await heard(inbox, 3 * EVERY_MS) == 0  # judged: no more repeats
        nursery.cancel_scope.cancel()


async def test_it_gives_up_when_the_requester_has_decided_without_sentries(
    autojump_clock: object,
) -> None:
    hub = Hub()
    worker, listener = net(hub), net(hub)
    ident, att = attestation_of(worker, 2)
    announcer = AttestationAnnouncer(worker, lambda _peer: True, 1, EVERY_MS, FOR_MS)
    inbox = await listener.subscribe(ATTESTS, frozenset({Attestation.KIND}))
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        await announcer.announce(ident, att)
        assert await heard(inbox, FOR_MS + EVERY_MS) == FOR_MS // EVERY_MS
        assert announcer.pending == {}
        assert await heard(inbox, 3 * EVERY_MS) == 0
        nursery.cancel_scope.cancel()
