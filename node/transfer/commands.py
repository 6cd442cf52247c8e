"""The networked halves of ``idlegrid data get`` and ``data serve``, imported only when used
(they pull in libp2p, which costs every other command a second of start-up)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import trio

from node.home import Home
from node.transfer import local
from node.transfer.fetcher import Progress, fetch
from node.transfer.sealed import is_sealed
from node.transfer.server import TransferServer
from p2p.host import DialError, Host, open_host
from storage import dataset_cache as cache
from storage import transfer_access as access
from storage.db import Database, open_sync
from storage.transfer_files import materialize


async def get_dataset(
    home: Home,
    dataset_id: bytes,
    out: Path,
    sources: list[str],
    *,
    window: int | None,
    bulk: bool,
) -> dict[str, Any]:
    store = local.chunk_store(home.root)
    async with open_host(os.urandom(32)) as host, await Database.open(home.db) as db:
        peers = await _connect(host, sources)
        result = await fetch(
            host, db, store, dataset_id, peers, window=window, bulk=bulk, on_chunk=_Bar()
        )
        await db.transaction(lambda c: cache.keep(c, dataset_id))  # the operator's now
    await trio.to_thread.run_sync(materialize, result.manifest, store, out)
    return {
        "dataset_id": dataset_id.hex(),
        "out": str(out),
        "chunks_moved": result.chunks_moved,
        "bytes_moved": result.bytes_moved,
        "sealed": is_sealed(result.manifest),
        "opened": False,  # only the daemon holds the node key a sealed dataset opens with
        "sources": {p: vars(s) for p, s in result.sources.items()},
    }


class _Bar:
    """A one-line progress bar on stderr (only on a terminal): bytes, rate, ETA, sources."""

    def __init__(self) -> None:
        self.shown_at = 0.0

    def __call__(self, p: Progress) -> None:
        now = trio.current_time()
        if not sys.stderr.isatty() or (now - self.shown_at < 0.25 and p.bytes_have < p.bytes_total):
            return
        self.shown_at = now
        rate = (p.bytes_have - p.bytes_at_start) / max(now - p.started_at, 1e-3)
        eta = (p.bytes_total - p.bytes_have) / rate if rate else 0.0
        used = sum(1 for s in p.schedule.sources.values() if s.chunks and not s.banned)
        pct = 100 * p.bytes_have // max(p.bytes_total, 1)
        bar = "#" * (pct // 5) + "." * (20 - pct // 5)
        print(
            f"\r[{bar}] {pct:3}% {p.bytes_have >> 20}/{p.bytes_total >> 20} MiB"
            f" {rate / 1e6:6.1f} MB/s ETA {eta:4.0f} s from {used} sources",
            end="\n" if p.bytes_have >= p.bytes_total else "",
            file=sys.stderr,
            flush=True,
        )


async def _connect(host: Host, addrs: list[str]) -> list[str]:
    peers = []
    for addr in addrs:
        try:
            peers.append(await host.connect(addr))
        except ValueError as exc:
            raise ValueError(f"--from: {exc}") from None
        except DialError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    if not peers:
        raise DialError("no holder reachable")
    return peers


async def serve_datasets(home: Home, listen: str, public: bool) -> None:
    store = local.chunk_store(home.root)
    datasets = local.complete_datasets(home.db, store)
    async with open_host(os.urandom(32), [listen]) as host, trio.open_nursery() as nursery:
        server = TransferServer(host, store, public=public)
        for dataset_id, manifest in datasets.items():
            server.offer(dataset_id, manifest)
            for peer in await trio.to_thread.run_sync(_grants, home, dataset_id):
                server.grant(peer, dataset_id)
        server.register()
        await nursery.start(server.run_bulk)
        print(f"serving {len(datasets)} datasets at {host.addrs[0]}", flush=True)


def _grants(home: Home, dataset_id: bytes) -> list[str]:
    conn = open_sync(home.db)
    try:
        return access.grants(conn, dataset_id)
    finally:
        conn.close()
