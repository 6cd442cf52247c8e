"""``idlegrid data``: add a file or folder as a dataset, get one from peers, see transfers.

``add`` and ``status`` work on the data dir alone; ``get`` and ``serve`` run their own
short-lived libp2p host (the daemon does not serve datasets yet; see README, "Data").
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import click
import trio

from consensus.errors import Invalid
from node.cli_base import BadInput, Failure, emit, home_option, json_option, table
from node.home import Home, resolve_home
from node.transfer import local
from node.transfer.fetcher import DEFAULT_WINDOW, FetchFailed, Progress, fetch
from node.transfer.server import TransferServer
from p2p.host import DialError, Host, open_host
from storage import transfer_journal as journal
from storage.db import Database, open_sync
from storage.transfer_files import UnsafeTarget, UnsupportedEntry, materialize


def _home(home_dir: str | None) -> Home:
    home = Home(resolve_home(home_dir))
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def _dataset_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BadInput(f"ID: {text!r} is not a dataset id (64 hex chars)")
    return raw


@click.group()
def data() -> None:
    """Datasets: content-addressed, resumable, fetched from several peers at once."""


@data.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--chunk-kib", type=click.IntRange(64, 8192), default=1024, show_default=True)
@home_option
@json_option
def add(path: Path, chunk_kib: int, home_dir: str | None, as_json: bool) -> None:
    """Chunk PATH (a file or folder) into the data dir; prints the dataset id."""
    home = _home(home_dir)
    try:
        dataset_id, manifest = local.add(
            home.db, local.chunk_store(home.root), path, chunk_kib << 10
        )
    except UnsupportedEntry as exc:
        raise BadInput(f"PATH: {exc}") from None
    info = {
        "dataset_id": dataset_id.hex(),
        "files": len(manifest.files),
        "chunks": len(manifest.chunks),
        "bytes": manifest.total_bytes,
    }
    emit(as_json, info, lambda i: i["dataset_id"])


@data.command()
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "sources", multiple=True, required=True, help="holder multiaddr (repeat)")
@click.option("--window", type=click.IntRange(1, 256), default=DEFAULT_WINDOW, show_default=True)
@click.option(
    "--bulk/--no-bulk", default=True, show_default=True, help="sealed TCP channel beside libp2p"
)
@home_option
@json_option
def get(
    *,
    dataset: str,
    out: Path,
    sources: tuple[str, ...],
    window: int,
    bulk: bool,
    home_dir: str | None,
    as_json: bool,
) -> None:
    """Fetch DATASET from the holders given with --from and write it under --out."""
    dataset_id = _dataset_id(dataset)
    home = _home(home_dir)
    try:
        run = functools.partial(
            _get, home, dataset_id, out, list(sources), window=window, bulk=bulk
        )
        result = trio.run(run)
    except (FetchFailed, DialError) as exc:
        raise Failure(str(exc)) from None
    except (Invalid, UnsafeTarget) as exc:
        raise Failure(f"refused: {exc}") from None
    emit(as_json, result, lambda r: f"{r['dataset_id']} -> {r['out']}")


async def _get(
    home: Home, dataset_id: bytes, out: Path, sources: list[str], *, window: int, bulk: bool
) -> dict[str, Any]:
    store = local.chunk_store(home.root)
    async with open_host(os.urandom(32)) as host, await Database.open(home.db) as db:
        peers = await _connect(host, sources)
        result = await fetch(
            host, db, store, dataset_id, peers, window=window, bulk=bulk, on_chunk=_Bar()
        )
    await trio.to_thread.run_sync(materialize, result.manifest, store, out)
    return {
        "dataset_id": dataset_id.hex(),
        "out": str(out),
        "chunks_moved": result.chunks_moved,
        "bytes_moved": result.bytes_moved,
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
            raise BadInput(f"--from: {exc}") from None
        except DialError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    if not peers:
        raise DialError("no holder reachable")
    return peers


@data.command()
@click.argument("dataset", required=False)
@home_option
@json_option
def status(dataset: str | None, home_dir: str | None, as_json: bool) -> None:
    """Transfers recorded here: state, progress, bytes moved, sources."""
    home = _home(home_dir)
    wanted = _dataset_id(dataset) if dataset else None
    conn = open_sync(home.db)
    try:
        rows = [
            {**vars(r), "dataset_id": r.dataset_id.hex(), "sources": {
                p: vars(s) for p, s in journal.sources(conn, r.dataset_id).items()}}
            for r in journal.transfers(conn, wanted)
        ]  # fmt: skip
    finally:
        conn.close()
    emit(as_json, rows, _status_table)


def _status_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no transfers"
    lines = [("DATASET", "ORIGIN", "STATE", "PROGRESS", "MOVED", "SOURCES")]
    for r in rows:
        pct = 100 * r["bytes_have"] // max(r["bytes_total"], 1)
        bar = "#" * (pct // 10) + "." * (10 - pct // 10)
        lines.append((
            r["dataset_id"][:16], r["origin"], r["state"],
            f"[{bar}] {pct}% of {r['bytes_total']} B", f"{r['bytes_moved']} B",
            str(len(r["sources"])),
        ))  # fmt: skip
    return table(lines)


@data.command()
@click.option("--listen", default="/ip4/127.0.0.1/tcp/0", show_default=True)
@click.option("--public", is_flag=True, required=True, help="serve to any peer (required for now)")
@home_option
def serve(listen: str, public: bool, home_dir: str | None) -> None:
    """Serve every complete dataset here to any peer until interrupted (prints the address)."""
    home = _home(home_dir)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve, home, listen, public)


async def _serve(home: Home, listen: str, public: bool) -> None:
    store = local.chunk_store(home.root)
    datasets = local.complete_datasets(home.db, store)
    async with open_host(os.urandom(32), [listen]) as host, trio.open_nursery() as nursery:
        server = TransferServer(host, store, public=public)
        for dataset_id, manifest in datasets.items():
            server.offer(dataset_id, manifest)
        server.register()
        await nursery.start(server.run_bulk)
        print(f"serving {len(datasets)} datasets at {host.addrs[0]}", flush=True)
