"""The sealed bulk channel beside libp2p: only a ticket holder gets in, frames are sealed, a
lying holder is still caught, and a holder without a bulk channel falls back to the stream."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.transfer.channel import SealedChannel
from node.transfer.fetcher import FetchFailed, fetch, open_bulk
from p2p.framing import RequestError, StreamFailed, encode_frame
from p2p.host import open_host
from storage.blobs import BlobStore
from storage.db import Database
from storage.transfer_files import materialize
from tests.integration.test_transfer import Holder, Liar, make_tree, tree

pytestmark = pytest.mark.slow
TIMEOUT_S = 60


async def test_bulk_moves_a_folder_from_two_holders_one_lying(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, big_files=6, small_files=40)
    async with (
        open_host(os.urandom(32)) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h1,
        open_host(os.urandom(32)) as h2,
        trio.open_nursery() as nursery,
    ):
        liar, honest = Holder(h1, tmp_path / "liar", Liar), Holder(h2, tmp_path / "honest")
        for holder in (liar, honest):
            await nursery.start(holder.server.run_bulk)
            await me.connect(holder.host.addrs[0])
        dataset_id, manifest = liar.add(src, me.peer_id)
        honest.add(src, me.peer_id)
        store = BlobStore(tmp_path / "r-chunks")
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(me, db, store, dataset_id, [h1.peer_id, h2.peer_id], bulk=True)
        assert result.sources[h1.peer_id].banned and result.sources[h1.peer_id].chunks == 0
        assert result.sources[h2.peer_id].chunks == len(manifest.chunks)
        materialize(result.manifest, store, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(src)
        nursery.cancel_scope.cancel()


async def test_tickets_are_granted_one_time_and_sealed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(3000))
    async with (
        open_host(os.urandom(32)) as me,
        open_host(os.urandom(32)) as h,
        trio.open_nursery() as nursery,
    ):
        holder = Holder(h, tmp_path / "holder")
        port = await nursery.start(holder.server.run_bulk)
        await me.connect(h.addrs[0])
        secret_id, _ = holder.add(tmp_path / "f", "someone-else")
        with trio.fail_after(TIMEOUT_S):
            with pytest.raises(RequestError, match="not_found"):
                await open_bulk(me, h.peer_id, {"d": secret_id})  # not granted: no ticket
            # a made-up token: the holder hangs up without a word
            sock = await trio.open_tcp_stream("127.0.0.1", port)
            await sock.send_all(os.urandom(32))
            assert await sock.receive_some(10) == b""
            # the right token with the wrong key: the first frame fails to open, nothing served
            holder.server.grant(me.peer_id, secret_id)
            channel = await open_bulk(me, h.peer_id, {"d": secret_id})
            assert isinstance(channel, SealedChannel)
            forged = SealedChannel(channel.sock, os.urandom(32), client=True)
            await forged.send(encode_frame({"d": secret_id, "i": 0}, 4096))
            with pytest.raises(StreamFailed):
                await channel.receive(1 << 20)
            assert holder.server.served[secret_id] == 0
            # a proper channel is served, and the bytes on the wire are not the plaintext
            channel = await open_bulk(me, h.peer_id, {"d": secret_id})
            await channel.send(encode_frame({"d": secret_id, "i": 0}, 4096))
            assert len(await channel.receive(1 << 20)) > 3000
            assert holder.server.served[secret_id] == 1
            await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_without_a_bulk_channel_the_stream_is_used(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(300_000))
    async with (
        open_host(os.urandom(32)) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h,
    ):
        holder = Holder(h, tmp_path / "holder")  # run_bulk never started
        await me.connect(h.addrs[0])
        dataset_id, manifest = holder.add(tmp_path / "f", me.peer_id)
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(
                me, db, BlobStore(tmp_path / "c"), dataset_id, [h.peer_id], bulk=True
            )
        assert result.chunks_moved == len(manifest.chunks)
        with pytest.raises(FetchFailed):
            await fetch(me, db, BlobStore(tmp_path / "c2"), os.urandom(32), [h.peer_id], bulk=True)
