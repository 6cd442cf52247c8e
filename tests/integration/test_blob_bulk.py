"""Task files over the bulk channel: real nodes (libp2p on 127.0.0.1, transfer servers, blob
stores) in this process. The fast path carries the ciphertext, resumes from a part, falls back
to pieces where it breaks or is not offered, and a holder lying over it is caught and skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from consensus.market.messages import BlobRef
from node.daemon import NodeContext
from node.market import blob_bulk, blobshare
from node.market.blob_bulk import BULK_PIECE_BYTES
from node.market.blobshare import PART_SUFFIX, BlobShare
from node.transfer import run as transfer_run
from node.transfer.channel import ChunkChannel
from node.transfer.server import MAX_BULK_PER_PEER, TransferServer
from p2p.framing import HEADER
from p2p.reqresp import RequestRejected
from storage.blobs import BlobStore
from tests.inprocess import start_node

pytestmark = pytest.mark.slow
TIMEOUT_S = 60
BLOB_BYTES = 3 * BULK_PIECE_BYTES + 12345  # several bulk frames, several pieces


Start = Callable[[str], Awaitable[NodeContext]]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts nodes by name in one nursery, each bootstrapped to the first."""
    started: list[NodeContext] = []
    async with trio.open_nursery() as nursery:

        async def start(name: str) -> NodeContext:
            first = started[0] if started else None
            started.append(await start_node(nursery, tmp_path / name, bootstrap=first))
            return started[-1]

        yield start
        nursery.cancel_scope.cancel()


def share(ctx: NodeContext) -> BlobShare:
    assert ctx.market is not None
    return ctx.market.share


def addrs_of(*holders: NodeContext) -> Callable[[str], list[str]]:
    known = {h.keys.peer_id: [str(a) for a in h.network.host.addrs] for h in holders if h.network}
    return lambda peer: known.get(peer, [])


async def put(holder: NodeContext, taker: NodeContext, path: Path) -> BlobRef:
    ref = await share(holder).put(path)
    share(holder).grant(taker.keys.peer_id, ref.hash)
    return ref


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, int]]:
    """Every bulk stream a holder starts: (the file, the offset asked for)."""
    seen: list[tuple[Path, int]] = []
    real = blob_bulk.send_blob

    async def spy(path: Path, offset: int, channel: ChunkChannel) -> None:
        seen.append((path, offset))
        await real(path, offset, channel)

    monkeypatch.setattr(blobshare, "send_blob", spy)
    return seen


async def test_a_blob_moves_over_the_bulk_channel_and_resumes_from_its_part(
    tmp_path: Path, nodes: Start, sends: list[tuple[Path, int]]
) -> None:
    holder, taker = await nodes("holder"), await nodes("taker")
    data = os.urandom(BLOB_BYTES)
    (tmp_path / "f").write_bytes(data)
    ref = await put(holder, taker, tmp_path / "f")
    # half of the ciphertext already here, as a fetch cut off (or killed) would leave it
    sealed = share(holder).store.get(ref.hash.hex())
    half = len(sealed) // 2
    share(taker).scratch.mkdir(parents=True, exist_ok=True)
    (share(taker).scratch / f"{ref.hash.hex()}.{PART_SUFFIX}").write_bytes(sealed[:half])
    with trio.fail_after(TIMEOUT_S):
        got = await share(taker).fetch(ref, addrs_of(holder))
    assert got.read_bytes() == data
    assert [offset for _, offset in sends] == [half]  # one channel, for the rest only
    assert share(holder).served == {"bulk": 1}  # no piece went over libp2p
    assert list(share(taker).scratch.iterdir()) == []  # the part moved into the store


async def test_a_channel_that_breaks_midway_is_finished_in_pieces(
    tmp_path: Path, nodes: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, taker = await nodes("holder"), await nodes("taker")

    async def one_frame_then_hang_up(path: Path, offset: int, channel: ChunkChannel) -> None:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(BULK_PIECE_BYTES)
        await channel.send(HEADER.pack(len(data)) + data)

    monkeypatch.setattr(blobshare, "send_blob", one_frame_then_hang_up)
    data = os.urandom(BLOB_BYTES)
    (tmp_path / "f").write_bytes(data)
    ref = await put(holder, taker, tmp_path / "f")
    with trio.fail_after(TIMEOUT_S):
        got = await share(taker).fetch(ref, addrs_of(holder))
    assert got.read_bytes() == data
    pieces = -(-(ref.size - BULK_PIECE_BYTES) // blobshare.PIECE_BYTES)
    assert share(holder).served == {"bulk": 1, "pieces": pieces}  # only the rest


async def test_a_holder_without_a_bulk_channel_serves_pieces(tmp_path: Path, nodes: Start) -> None:
    holder, taker = await nodes("holder"), await nodes("taker")
    share(holder).bulk = None  # a node reached only through relays has no bulk listener
    data = os.urandom(2 * blobshare.PIECE_BYTES + 1)
    (tmp_path / "f").write_bytes(data)
    ref = await put(holder, taker, tmp_path / "f")
    with trio.fail_after(TIMEOUT_S):
        got = await share(taker).fetch(ref, addrs_of(holder))
    assert got.read_bytes() == data
    assert share(holder).served == {"pieces": 3}


async def test_a_holder_lying_over_the_bulk_channel_is_blamed_and_the_next_one_serves(
    tmp_path: Path,
    nodes: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    liar, honest, taker = [await nodes(n) for n in ("liar", "honest", "taker")]
    real = blob_bulk.send_blob

    async def lie_if_liar(path: Path, offset: int, channel: ChunkChannel) -> None:
        if liar.home.root not in path.parents:
            await real(path, offset, channel)
            return
        left = path.stat().st_size - offset  # the right size, the wrong bytes
        while left:
            junk = os.urandom(min(left, BULK_PIECE_BYTES))
            await channel.send(HEADER.pack(len(junk)) + junk)
            left -= len(junk)

    monkeypatch.setattr(blobshare, "send_blob", lie_if_liar)
    data = os.urandom(BLOB_BYTES)
    (tmp_path / "f").write_bytes(data)
    ref = await put(honest, taker, tmp_path / "f")
    share(liar).store.put(share(honest).store.get(ref.hash.hex()))  # it holds the real thing
    share(liar).grant(taker.keys.peer_id, ref.hash)
    blamed: list[str] = []
    monkeypatch.setattr(share(taker).net, "blame", lambda peer, reason: blamed.append(peer))
    both = BlobRef(hash=ref.hash, size=ref.size, holders=[liar.keys.peer_id, honest.keys.peer_id])
    with trio.fail_after(TIMEOUT_S):
        got = await share(taker).fetch(both, addrs_of(liar, honest))
    assert got.read_bytes() == data
    assert blamed == [liar.keys.peer_id]
    assert share(liar).served == {"bulk": 1} and share(honest).served == {"bulk": 1}


async def test_a_bulk_port_that_does_not_answer_costs_one_short_wait_then_pieces(
    tmp_path: Path, nodes: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, taker = await nodes("holder"), await nodes("taker")

    async def dropped(*_: object) -> trio.SocketStream:  # a firewall that drops the SYN
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(transfer_run, "BULK_CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(transfer_run.trio, "open_tcp_stream", dropped)
    for name in ("one", "two"):
        data = os.urandom(blobshare.PIECE_BYTES + 1)
        (tmp_path / name).write_bytes(data)
        ref = await put(holder, taker, tmp_path / name)
        with trio.fail_after(TIMEOUT_S):
            assert (await share(taker).fetch(ref, addrs_of(holder))).read_bytes() == data
    assert share(holder).served == {"bulk": 1, "pieces": 4}  # no second ticket asked for


async def test_a_peer_gets_a_bounded_number_of_bulk_channels(tmp_path: Path) -> None:
    server = TransferServer(cast(Any, None), BlobStore(tmp_path / "store"))
    server.bulk_port = 1  # tickets only: nothing listens

    async def serve(channel: ChunkChannel) -> None:
        raise AssertionError("never connected")

    for _ in range(MAX_BULK_PER_PEER):
        server.issue_ticket("peer-a", serve)
    with pytest.raises(RequestRejected, match="busy"):
        server.issue_ticket("peer-a", serve)
    assert server.issue_ticket("peer-b", serve)["port"] == 1  # others are not held up
