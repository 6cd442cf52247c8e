"""Route probing and source choice: a holder that falls far behind is left for the others, a
standby holder takes over from one that dies, and what each route measured is journalled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.transfer.fetcher import fetch
from node.transfer.server import TransferServer
from p2p.host import open_host
from storage import transfer_access as access
from storage.blobs import BlobStore
from storage.db import Database
from storage.transfer_files import materialize
from tests.integration.test_transfer import Dying, Holder, make_tree, tree

pytestmark = pytest.mark.slow
TIMEOUT_S = 60
SLOW_CHUNK_S = 0.1  # a holder behind a slow link: one chunk at a time, each this late


class Sluggish(TransferServer):
    lock = trio.Lock()

    async def read_chunk(self, digest: str) -> bytes:
        async with self.lock:
            await trio.sleep(SLOW_CHUNK_S)  # the slow link itself, not synchronisation
            return await super().read_chunk(digest)


class FarAway(TransferServer):
    """Answers probes late, as a holder on a long route would."""

    async def _probe(self, peer: str, payload: object) -> object:
        await trio.sleep(0.2)  # the route's round trip, not synchronisation
        return await super()._probe(peer, payload)


async def test_a_holder_far_slower_than_the_other_is_left(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, big_files=12, small_files=10)
    async with (
        open_host(os.urandom(32)) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h1,
        open_host(os.urandom(32)) as h2,
    ):
        slow, fast = Holder(h1, tmp_path / "slow", Sluggish), Holder(h2, tmp_path / "fast")
        for h in (h1, h2):
            await me.connect(h.addrs[0])
        dataset_id, manifest = slow.add(src, me.peer_id)
        fast.add(src, me.peer_id)
        store = BlobStore(tmp_path / "r-chunks")
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(me, db, store, dataset_id, [h1.peer_id, h2.peer_id])
        left, kept = result.sources[h1.peer_id], result.sources[h2.peer_id]
        assert left.slow and not left.banned
        assert 4 <= left.chunks < kept.chunks
        assert left.chunks + kept.chunks == len(manifest.chunks)
        materialize(result.manifest, store, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(src)
        routes = {
            r.peer_id: r for r in await db.transaction(lambda c: access.probes(c, dataset_id))
        }
        assert routes[h1.peer_id].state == "slow" and routes[h2.peer_id].state == "used"
        assert routes[h1.peer_id].rate_bps * 4 < routes[h2.peer_id].rate_bps
        assert all(r.rtt_us and r.route.startswith("/ip4/127.0.0.1/") for r in routes.values())


async def test_a_standby_holder_takes_over_from_one_that_dies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, big_files=6, small_files=10)
    async with (
        open_host(os.urandom(32)) as me,
        await Database.open(tmp_path / "r.db") as db,
        open_host(os.urandom(32)) as h1,
        open_host(os.urandom(32)) as h2,
    ):
        dying, spare = Holder(h1, tmp_path / "dying", Dying), Holder(h2, tmp_path / "far", FarAway)
        for h in (h1, h2):
            await me.connect(h.addrs[0])
        dataset_id, manifest = dying.add(src, me.peer_id)
        spare.add(src, me.peer_id)
        store = BlobStore(tmp_path / "r-chunks")
        with trio.fail_after(TIMEOUT_S):
            result = await fetch(me, db, store, dataset_id, [h1.peer_id, h2.peer_id], max_sources=1)
        # The nearer holder was used alone until it died; then the standby one took over.
        assert result.sources[h1.peer_id].banned and result.sources[h1.peer_id].chunks <= 2
        assert result.sources[h2.peer_id].chunks >= len(manifest.chunks) - 2
        assert sum(s.chunks for s in result.sources.values()) == len(manifest.chunks)
        materialize(result.manifest, store, tmp_path / "out")
        assert tree(tmp_path / "out") == tree(src)
