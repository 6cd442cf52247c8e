"""The signed-peer-record cache in front of py-libp2p's per-RPC check (p2p/records.py)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from consensus.envelope import seal_body
from p2p import records
from p2p.records import OWN_RECORD_S, REFRESH_S, OwnRecord, RecordCache
from tests.p2p.test_gossip import PRESENCE, WIRE_PRESENCE, honest_node, link, next_message, presence


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rpc(record: bytes | None) -> rpc_pb2.RPC:
    msg = rpc_pb2.RPC()
    if record is not None:
        msg.senderRecord = record
    return msg


def test_a_record_is_checked_once_per_peer_and_bytes_then_refreshed() -> None:
    checked: list[tuple[bytes, str]] = []

    def consume(msg: rpc_pb2.RPC, host: object, peer: object) -> bool:
        checked.append((msg.senderRecord, str(peer)))
        return msg.senderRecord != b"forged"

    clock = Clock()
    cache = RecordCache(consume, clock)
    for _ in range(5):
        assert cache(rpc(b"rec-1"), None, "peer-a")
    assert checked == [(b"rec-1", "peer-a")] and cache.hits == 4
    assert cache(rpc(b"rec-2"), None, "peer-a")  # new addresses: a new record, checked
    assert cache(rpc(b"rec-1"), None, "peer-b")  # the same bytes from another peer: checked
    assert len(checked) == 3
    for _ in range(2):  # a rejected record is never remembered: rejected every time
        assert not cache(rpc(b"forged"), None, "peer-a")
    assert len(checked) == 5
    assert cache(rpc(None), None, "peer-a") and len(checked) == 5  # nothing to check
    clock.now += REFRESH_S
    assert cache(rpc(b"rec-1"), None, "peer-a") and len(checked) == 6  # refreshed in time


def test_our_own_record_is_rebuilt_per_host_at_most_every_few_seconds() -> None:
    built: list[object] = []

    def build(host: object) -> tuple[bytes, bool]:
        built.append(host)
        return b"rec-%d" % len(built), True

    class FakeHost:
        pass

    clock = Clock()
    own, a, b = OwnRecord(build, clock), FakeHost(), FakeHost()
    assert own(a) == (b"rec-1", True)
    assert own(a) == (b"rec-1", False) and own(b) == (b"rec-2", True)
    clock.now += OWN_RECORD_S  # addresses may have changed since: asked again
    assert own(a) == (b"rec-3", True)
    assert built == [a, b, a] and own.hits == 1


async def test_gossip_between_real_hosts_checks_each_record_once() -> None:
    cache = records.install()
    async with AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(honest_node()) for _ in range(2)]
        await link(a.host, a.gossip.pubsub, b.host)
        await b.gossip.pubsub.wait_for_mesh(ID.from_base58(a.host.peer_id), WIRE_PRESENCE, 10)
        hits = cache.hits
        with trio.fail_after(10):
            for seq in range(1, 4):
                body = presence(seq)
                await a.gossip.publish(PRESENCE, seal_body(a.key, body))
                assert (await next_message(b)).opened.body == body
        assert cache.hits > hits, "repeated records skipped the library's check"
