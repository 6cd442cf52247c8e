"""The plain bulk channel for datasets sealed end to end: their chunks go out straight from the
holder's files, a holder lying that way is still caught, a plain ticket for a dataset that is
not sealed is refused (the fetch takes the libp2p stream instead), and a plain channel serves
no open dataset's chunk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from node.transfer.channel import PlainChannel, SealedChannel
from node.transfer.fetcher import fetch, open_bulk
from node.transfer.sealed import SEALED_CHUNK_BYTES, is_sealed, open_tree, seal_tree
from node.transfer.server import ServeChannel, TransferServer
from node.transfer.wire import split_chunk_reply
from p2p.framing import RequestError, decode_body, encode_frame, frame_limits
from p2p.host import open_host
from storage.blobs import BlobStore
from storage.db import Database
from storage.transfer_files import materialize
from tests.integration.test_transfer import Holder, make_tree, tree

pytestmark = pytest.mark.slow
TIMEOUT_S = 60


class FileCounter(TransferServer):
    """Counts the chunks it sends as files."""

    files = 0

    async def chunk_file(self, digest: str) -> tuple[Path, int] | None:
        found = await super().chunk_file(digest)
        type(self).files += found is not None
        return found


class FileLiar(TransferServer):
    """Sends every chunk as a file with one byte flipped."""

    async def chunk_file(self, digest: str) -> tuple[Path, int] | None:
        data = bytearray(self.store.path(digest).read_bytes())
        data[len(data) // 2] ^= 0xFF
        lie = self.store.root / f"lie-{digest}"
        lie.write_bytes(data)
        return lie, len(data)


class PlainForAll(TransferServer):
    """Hands out plain tickets for every dataset, sealed or not."""

    def issue_ticket(self, peer: str, serve: ServeChannel, *, sealed: bool = True) -> Any:
        return super().issue_ticket(peer, serve, sealed=False)


async def test_a_sealed_dataset_moves_from_files_past_a_lying_holder(tmp_path: Path) -> None:
    seed = os.urandom(32)
    make_tree(tmp_path / "src", big_files=4, small_files=20)
    async with (
        open_host(seed) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h1,
        open_host(os.urandom(32)) as h2,
        trio.open_nursery() as nursery,
    ):
        sealed = seal_tree(tmp_path / "src", me.peer_id, tmp_path / "sealed")
        liar = Holder(h1, tmp_path / "liar", FileLiar)
        honest = Holder(h2, tmp_path / "honest", FileCounter)
        for holder in (liar, honest):
            await nursery.start(holder.server.run_bulk)
            await me.connect(holder.host.addrs[0])
        dataset_id, manifest = liar.add(sealed, me.peer_id)
        honest.add(sealed, me.peer_id)
        store = BlobStore(tmp_path / "r-chunks")
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(me, db, store, dataset_id, [h1.peer_id, h2.peer_id], bulk=True)
        assert result.sources[h1.peer_id].banned and result.sources[h1.peer_id].chunks == 0
        assert result.sources[h2.peer_id].chunks == len(manifest.chunks)
        assert FileCounter.files >= len(manifest.chunks) - 2  # the tail chunks may be small
        materialize(result.manifest, store, tmp_path / "out")
        open_tree(tmp_path / "out", nacl.signing.SigningKey(seed))
        assert tree(tmp_path / "out") == tree(tmp_path / "src")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "stream"])
async def test_a_sealed_dataset_in_its_default_chunks_moves_either_way(
    tmp_path: Path, bulk: bool
) -> None:
    seed = os.urandom(32)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "weights.bin").write_bytes(os.urandom(9 << 20))
    async with (
        open_host(seed) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h,
        trio.open_nursery() as nursery,
    ):
        sealed = seal_tree(tmp_path / "src", me.peer_id, tmp_path / "sealed")
        holder = Holder(h, tmp_path / "holder")
        await nursery.start(holder.server.run_bulk)
        await me.connect(h.addrs[0])
        dataset_id, manifest = holder.add(sealed, me.peer_id, SEALED_CHUNK_BYTES)
        assert max(c.size for c in manifest.chunks) == SEALED_CHUNK_BYTES
        store = BlobStore(tmp_path / "r-chunks")
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(me, db, store, dataset_id, [h.peer_id], bulk=bulk)
        assert result.chunks_moved == len(manifest.chunks)
        materialize(result.manifest, store, tmp_path / "out")
        open_tree(tmp_path / "out", nacl.signing.SigningKey(seed))
        assert tree(tmp_path / "out") == tree(tmp_path / "src")
        nursery.cancel_scope.cancel()


async def test_a_plain_ticket_is_taken_for_sealed_data_only(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "f").write_bytes(os.urandom(300_000))
    async with (
        open_host(os.urandom(32)) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h,
        trio.open_nursery() as nursery,
    ):
        holder = Holder(h, tmp_path / "holder", PlainForAll)
        await nursery.start(holder.server.run_bulk)
        await me.connect(h.addrs[0])
        open_id, manifest = holder.add(tmp_path / "open", me.peer_id)
        with trio.fail_after(TIMEOUT_S):
            with pytest.raises(RequestError, match="not sealed end to end"):
                await open_bulk(me, h.peer_id, {"d": open_id})
            channel = await open_bulk(me, h.peer_id, {"d": open_id}, ciphertext=True)
            assert isinstance(channel, PlainChannel)
            await channel.aclose()
            # the fetch of the open dataset refuses the plain ticket and takes the stream
            store = BlobStore(tmp_path / "c")
            result = await fetch(me, db, store, open_id, [h.peer_id], bulk=True)
        assert result.chunks_moved == len(manifest.chunks)
        # two tickets never used: the refused one above, and the one the fetch refused
        assert len(holder.server._tickets) == 2
        materialize(result.manifest, store, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(tmp_path / "open")
        nursery.cancel_scope.cancel()


async def test_a_plain_channel_serves_no_open_dataset(tmp_path: Path) -> None:
    """A request injected on the path of a plain channel, for an open dataset the same peer
    may fetch, is refused: its chunks would cross the wire in the clear."""
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "f").write_bytes(os.urandom(300_000))
    make_tree(tmp_path / "src", big_files=1, small_files=2)
    async with (
        open_host(os.urandom(32)) as me,
        open_host(os.urandom(32)) as h,
        trio.open_nursery() as nursery,
    ):
        holder = Holder(h, tmp_path / "holder")
        await nursery.start(holder.server.run_bulk)
        await me.connect(h.addrs[0])
        sealed = seal_tree(tmp_path / "src", me.peer_id, tmp_path / "s")
        sealed_id, _ = holder.add(sealed, me.peer_id)
        open_id, _ = holder.add(tmp_path / "open", me.peer_id)
        with trio.fail_after(TIMEOUT_S):
            channel = await open_bulk(me, h.peer_id, {"d": sealed_id}, ciphertext=True)
            assert isinstance(channel, PlainChannel)
            for dataset_id in (open_id, sealed_id):
                await channel.send(encode_frame({"d": dataset_id, "i": 0}, 4096))
            refused = decode_body(bytes(await channel.receive(1 << 20)), frame_limits(1 << 20))
            assert refused == {"i": 0, "e": "not_sealed"}
            served = split_chunk_reply(await channel.receive(1 << 20))
            assert served is not None and served["i"] == 0 and len(served["b"]) > 0
            await channel.aclose()
        assert holder.server.served[open_id] == 0
        nursery.cancel_scope.cancel()


async def test_a_folder_holding_a_sealed_one_among_open_files_is_open(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", big_files=1, small_files=2)
    async with (
        open_host(os.urandom(32)) as me,
        open_host(os.urandom(32)) as h,
        trio.open_nursery() as nursery,
    ):
        mixed = seal_tree(tmp_path / "src", me.peer_id, tmp_path / "mixed")
        (mixed / "notes.txt").write_text("an open file beside the sealed ones")
        holder = Holder(h, tmp_path / "holder")
        await nursery.start(holder.server.run_bulk)
        await me.connect(h.addrs[0])
        dataset_id, manifest = holder.add(mixed, me.peer_id)
        assert not is_sealed(manifest)
        with trio.fail_after(TIMEOUT_S):
            channel = await open_bulk(me, h.peer_id, {"d": dataset_id}, ciphertext=True)
            assert isinstance(channel, SealedChannel), "its ticket carries a key"
            await channel.aclose()
        nursery.cancel_scope.cancel()
