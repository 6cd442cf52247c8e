"""Job data between market parties: end-to-end encrypted, granted per peer, checked by hash.

Real BlobShares, stores and keyrings on disk, over the in-memory network (real envelopes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
from blake3 import blake3

from consensus.market.messages import BlobRef
from node.market.blobshare import PIECE_BYTES, PROTOCOL, BlobShare, FetchFailed
from p2p.reqresp import RequestError
from tests.services.memnet import Hub
from tests.services.sim import SimNode, make_node


async def nodes(tmp_path: Path, *names: str) -> list[SimNode]:
    hub = Hub()
    return [await make_node(hub, tmp_path / name, name) for name in names]


def addrs(_: str) -> list[str]:
    return []


async def test_a_granted_peer_gets_the_plaintext_and_holders_keep_only_ciphertext(
    tmp_path: Path,
) -> None:
    requester, worker = await nodes(tmp_path, "requester", "worker")
    data = os.urandom(3 << 20)  # several pieces
    (tmp_path / "inputs.tar").write_bytes(data)
    ref = await requester.share.put(tmp_path / "inputs.tar")
    requester.share.grant(worker.net.peer_id, ref.hash)
    with trio.fail_after(30):
        got = await worker.share.fetch(ref, addrs)
    assert got.read_bytes() == data
    sealed = worker.share.store.path(ref.hash.hex()).read_bytes()
    assert data[:4096] not in sealed  # what travelled and what a relay would keep
    # a restart keeps the key: the plaintext is found again without asking anyone
    again = BlobShare(worker.net, worker.share.store, worker.root / "scratch", node_key(worker))
    assert again.local_path(ref) == got


def node_key(node: SimNode) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(blake3(node.name.encode()).digest())  # as make_node does


async def test_a_peer_without_a_grant_gets_neither_bytes_nor_key(tmp_path: Path) -> None:
    requester, worker, stranger = await nodes(tmp_path, "requester", "worker", "stranger")
    (tmp_path / "in").write_bytes(b"secret weights")
    ref = await requester.share.put(tmp_path / "in")
    requester.share.grant(worker.net.peer_id, ref.hash)
    with trio.fail_after(10), pytest.raises(FetchFailed, match="no such blob"):
        await stranger.share.fetch(ref, addrs)
    # even holding the ciphertext (say, a relay's copy) a stranger gets no key
    stranger.share.store.put(requester.share.store.get(ref.hash.hex()))
    with trio.fail_after(10), pytest.raises(FetchFailed, match="no such blob"):
        await stranger.share.fetch(ref, addrs)


async def test_a_holder_serving_other_bytes_is_skipped_for_the_next(tmp_path: Path) -> None:
    liar, honest, worker = await nodes(tmp_path, "liar", "honest", "worker")
    (tmp_path / "in").write_bytes(os.urandom(5000))
    ref = await honest.share.put(tmp_path / "in")
    honest.share.grant(worker.net.peer_id, ref.hash)
    asked = []

    async def lie(peer: str, payload: Any) -> Any:
        asked.append(peer)
        return {"data": os.urandom(payload["length"])}

    liar.net.serve(PROTOCOL, lie)
    two = BlobRef(hash=ref.hash, size=ref.size, holders=[liar.net.peer_id, honest.net.peer_id])
    with trio.fail_after(10):
        got = await worker.share.fetch(two, addrs)
    assert asked == [worker.net.peer_id]
    assert got.read_bytes() == (tmp_path / "in").read_bytes()
    by, whom, why = worker.net.hub.blamed[0]
    assert (by, whom) == (worker.net.peer_id, liar.net.peer_id)
    assert "bytes do not match the hash" in why


async def test_a_liar_is_named_when_no_holder_serves_the_blob(tmp_path: Path) -> None:
    liar, gone, worker = await nodes(tmp_path, "liar", "gone", "worker")
    (tmp_path / "in").write_bytes(os.urandom(5000))
    ref = await liar.share.put(tmp_path / "in")
    liar.share.grant(worker.net.peer_id, ref.hash)

    async def lie(peer: str, payload: Any) -> Any:
        return {"data": os.urandom(payload["length"])}

    liar.net.serve(PROTOCOL, lie)
    gone.net.hub.kill(gone.net.peer_id)  # unreachable: no fault of its own
    two = BlobRef(hash=ref.hash, size=ref.size, holders=[gone.net.peer_id, liar.net.peer_id])
    with trio.fail_after(10), pytest.raises(FetchFailed) as failed:
        await worker.share.fetch(two, addrs)
    assert failed.value.liars == {liar.net.peer_id}
    assert [whom for _, whom, _ in worker.net.hub.blamed] == [liar.net.peer_id]


async def test_a_fetch_cut_off_midway_resumes_after_a_restart_moving_only_the_rest(
    tmp_path: Path,
) -> None:
    requester, worker = await nodes(tmp_path, "requester", "worker")
    data = os.urandom((5 << 20) + 1234)  # six pieces
    (tmp_path / "ckpt").write_bytes(data)
    ref = await requester.share.put(tmp_path / "ckpt")
    requester.share.grant(worker.net.peer_id, ref.hash)
    pieces = -(-ref.size // PIECE_BYTES)
    served: list[int] = []
    cut = [True]

    async def counting(peer: str, payload: Any) -> Any:
        if "offset" in payload:
            if cut[0] and payload["offset"] >= 2 * PIECE_BYTES:  # the link fails after two
                raise RequestError("cut off")
            served.append(payload["offset"])
        return await requester.share._serve(peer, payload)

    requester.net.serve(PROTOCOL, counting)
    with trio.fail_after(30), pytest.raises(FetchFailed):
        await worker.share.fetch(ref, addrs)
    assert (worker.root / "scratch" / f"{ref.hash.hex()}.part").stat().st_size == 2 * PIECE_BYTES

    cut[0] = False
    served.clear()
    restarted = BlobShare(worker.net, worker.share.store, worker.root / "scratch", node_key(worker))
    with trio.fail_after(30):
        got = await restarted.fetch(ref, addrs)
    assert got.read_bytes() == data
    assert sorted(served) == [i * PIECE_BYTES for i in range(2, pieces)], "only the missing ones"
    assert not list((worker.root / "scratch").glob("*.part"))
    assert worker.net.hub.blamed == []


async def test_a_resumed_part_that_does_not_match_blames_nobody_and_is_fetched_whole(
    tmp_path: Path,
) -> None:
    """Bytes left by an earlier fetch (another holder's, say) spoil the whole; the holder now
    asked is not blamed for them: it is asked for all of the blob once more."""
    requester, worker = await nodes(tmp_path, "requester", "worker")
    (tmp_path / "in").write_bytes(os.urandom(3 << 20))
    ref = await requester.share.put(tmp_path / "in")
    requester.share.grant(worker.net.peer_id, ref.hash)
    scratch = worker.root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / f"{ref.hash.hex()}.part").write_bytes(os.urandom(PIECE_BYTES))  # not its bytes
    served: list[int] = []

    async def counting(peer: str, payload: Any) -> Any:
        if "offset" in payload:
            served.append(payload["offset"])
        return await requester.share._serve(peer, payload)

    requester.net.serve(PROTOCOL, counting)
    with trio.fail_after(30):
        got = await worker.share.fetch(ref, addrs)
    assert got.read_bytes() == (tmp_path / "in").read_bytes()
    assert worker.net.hub.blamed == []
    every = list(range(0, ref.size, PIECE_BYTES))
    assert served == every[1:] + every, "the rest after the part, then all of it again"


async def test_parts_nobody_resumed_for_a_day_are_swept(tmp_path: Path) -> None:
    (worker,) = await nodes(tmp_path, "worker")
    scratch = worker.root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    old, fresh = scratch / f"{'a' * 64}.part", scratch / f"{'b' * 64}.part"
    other = scratch / "x.tar"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    day_ago = time.time() - 86_400 - 60
    os.utime(old, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    assert worker.share.sweep_scratch() == 1
    assert not old.exists() and fresh.exists() and other.exists()
