"""``idlegrid data``: add a file or folder as a dataset, get one from peers, see transfers.

``add`` and ``status`` work on the data dir alone; ``get`` and ``serve`` run their own
short-lived libp2p host (the daemon does not serve datasets yet; see README, "Data").
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import click
import trio

from consensus.errors import Invalid
from node.cli_base import BadInput, Failure, emit, home_option, json_option, table
from node.home import Home, resolve_home
from node.transfer import local
from storage import transfer_journal as journal
from storage.db import open_sync
from storage.errors import CorruptBlob
from storage.transfer_files import UnsafeTarget, UnsupportedEntry

DEFAULT_WINDOW = 8  # node.transfer.fetcher.DEFAULT_WINDOW, not imported: it pulls in libp2p


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
    # libp2p is imported only here: it costs every other command a second of start-up.
    from node.transfer.commands import get_dataset  # noqa: PLC0415
    from node.transfer.fetcher import FetchFailed  # noqa: PLC0415
    from p2p.host import DialError  # noqa: PLC0415

    dataset_id = _dataset_id(dataset)
    home = _home(home_dir)
    run = functools.partial(
        get_dataset, home, dataset_id, out, list(sources), window=window, bulk=bulk
    )
    try:
        result = trio.run(run)
    except Invalid as exc:
        raise Failure(f"refused: {exc}") from None
    except ValueError as exc:  # a --from that is not a multiaddr with /p2p/
        raise BadInput(str(exc)) from None
    except (FetchFailed, DialError) as exc:
        raise Failure(str(exc)) from None
    except UnsafeTarget as exc:
        raise Failure(f"refused: {exc}") from None
    except CorruptBlob as exc:
        raise Failure(f"{exc}: it was set aside; run the same get again") from None
    emit(as_json, result, lambda r: f"{r['dataset_id']} -> {r['out']}")


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
    from node.transfer.commands import serve_datasets  # noqa: PLC0415 (libp2p: only when used)

    home = _home(home_dir)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve_datasets, home, listen, public)
