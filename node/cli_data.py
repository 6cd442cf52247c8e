"""``idlegrid data``: add a file or folder as a dataset, get one from peers, see transfers.

``add``, ``grant`` and ``status`` work on the data dir (and tell a running daemon to serve
what was added or granted); ``get`` asks the running daemon to fetch (it finds holders through
the DHT when no ``--from`` is given) and follows it in the journal; with no daemon running,
``get`` and ``serve`` run their own short-lived libp2p host with a throwaway key.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import trio

from consensus.errors import Invalid
from consensus.market.messages import DATASET_HEX
from consensus.peer_id import public_key_from_peer_id, short
from consensus.transfer.plan import DEFAULT_CHUNK_BYTES, DEFAULT_PACK_BELOW
from node import identity
from node.cli_base import BadInput, Failure, emit, failure, home_option, json_option, table
from node.client import ApiClient, NotRunning
from node.home import Home, HomeError, resolve_home
from node.transfer import local
from node.transfer.sealed import SEALED_CHUNK_BYTES, SEALED_DIR, seal_tree
from storage import dataset_cache as cache
from storage import transfer_access as access
from storage import transfer_journal as journal
from storage.db import open_sync, run_transaction
from storage.errors import CorruptBlob
from storage.transfer_files import UnsafeTarget, UnsupportedEntry

ANYONE = "*"  # node.transfer.server.ANYONE, not imported: it pulls in libp2p
LIVE_MS = 10_000  # a transfer or route recorded more recently is a running fetch's
POLL_S = 0.25  # how often a get run by the daemon is looked at


def _home(home_dir: str | None, *, create: bool = False) -> Home:
    """The data dir; created only by the commands that store (``add``, ``get``, ``serve``
    on a plain data dir), so a mistyped ``--home`` is named, not a new empty dir."""
    home = Home(resolve_home(home_dir))
    if not create and not home.root.is_dir():
        raise BadInput(f"--home: {home.root} does not exist (nothing was ever stored there)")
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def _dataset_id(text: str, home: Home | None = None) -> bytes:
    """A dataset id: 64 hex, or (given ``home``) a unique prefix of one recorded there, as
    tables show them (16 hex)."""
    hexed = text.lower()
    if DATASET_HEX.fullmatch(hexed):
        return bytes.fromhex(hexed)
    if home is None or not re.fullmatch(r"[0-9a-f]{4,63}", hexed):
        raise BadInput(f"ID: {text!r} is not a dataset id (64 hex chars, or a prefix of one here)")
    conn = open_sync(home.db)
    try:
        known = [r.dataset_id for r in journal.transfers(conn)]
    finally:
        conn.close()
    found = [d for d in known if d.hex().startswith(hexed)]
    if len(found) != 1:
        raise BadInput(
            f"ID: {text!r} matches {len(found)} datasets here"
            + (": give more of it" if found else "")
        )
    return found[0]


@click.group()
def data() -> None:
    """Datasets: content-addressed, resumable, fetched from several peers at once."""


@data.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--chunk-kib",
    type=click.IntRange(DEFAULT_PACK_BELOW >> 10, 8192),  # small files pack into one chunk
    help=f"[default: {DEFAULT_CHUNK_BYTES >> 10}, {SEALED_CHUNK_BYTES >> 10} with --for]",
)
@click.option("--public", is_flag=True, help="serve it to any peer that asks")
@click.option(
    "--grant", "grants", multiple=True, help="peer id to serve it to, or * for anyone (repeat)"
)
@click.option("--for", "for_peer", help="seal it end to end to this peer id (and grant it)")
@home_option
@json_option
def add(
    *,
    path: Path,
    chunk_kib: int | None,
    public: bool,
    grants: tuple[str, ...],
    for_peer: str | None,
    home_dir: str | None,
    as_json: bool,
) -> None:
    """Chunk PATH (a file or folder) into the data dir; prints the dataset id."""
    home = _home(home_dir, create=True)
    peers = [_grantee(p) for p in grants] + ([_peer(for_peer)] if for_peer else [])
    peers += [ANYONE] if public and ANYONE not in peers else []
    staging = Path(tempfile.mkdtemp(dir=home.root, prefix="sealing-")) if for_peer else None
    chunk_bytes = chunk_kib << 10 if chunk_kib else _default_chunk_bytes(sealed=bool(for_peer))
    try:
        if for_peer and staging:
            path = seal_tree(path, for_peer, staging)
        dataset_id, manifest = local.add(home.db, local.chunk_store(home.root), path, chunk_bytes)
    except UnsupportedEntry as exc:
        raise BadInput(f"PATH: {exc}") from None
    except Invalid as exc:
        raise BadInput(f"--for: {exc}") from None
    finally:
        if staging:
            shutil.rmtree(staging)
    info = {
        "dataset_id": dataset_id.hex(),
        "files": len(manifest.files),
        "chunks": len(manifest.chunks),
        "bytes": manifest.total_bytes,
        "grants": peers,
        "sealed_for": for_peer,
        "served_by_daemon": _grant_and_offer(home, dataset_id, peers),
    }
    if not info["served_by_daemon"] and not as_json:  # on stderr: stdout stays the bare id
        click.echo(_unserved_note(home), err=True)
    emit(as_json, info, lambda i: i["dataset_id"])


def _default_chunk_bytes(*, sealed: bool) -> int:
    """Bigger for a sealed dataset: it shares no chunk with any other (see
    :data:`node.transfer.sealed.SEALED_CHUNK_BYTES`)."""
    return SEALED_CHUNK_BYTES if sealed else DEFAULT_CHUNK_BYTES


def _unserved_note(home: Home) -> str:
    if home.is_initialised():
        return f"note: no daemon runs in {home.root}: it serves the dataset once started"
    return (
        f"note: {home.root} is not a node's data dir (`idlegrid init`), so no daemon serves "
        "the dataset from there; a job names only datasets its requester's node holds "
        "(pass that node's --home)"
    )


@data.command()
@click.argument("dataset")
@click.argument("peer")
@home_option
@json_option
def grant(dataset: str, peer: str, home_dir: str | None, as_json: bool) -> None:
    """Let PEER (a peer id, or * for anyone) fetch DATASET from this node."""
    home, grantee = _home(home_dir), _grantee(peer)
    dataset_id = _dataset_id(dataset, home)
    if not local.is_complete(home.db, dataset_id):
        raise BadInput(f"DATASET: {dataset_id.hex()[:16]} is not held whole here")
    served = _grant_and_offer(home, dataset_id, [grantee])
    emit(as_json, {"dataset_id": dataset_id.hex(), "peer": peer, "served_by_daemon": served},
         lambda i: f"granted {i['dataset_id'][:16]} to {i['peer']}")  # fmt: skip


def _grantee(text: str) -> str:
    """A peer to grant a dataset to: a peer id, or ``*`` for anyone (as ``--public``)."""
    return text if text == ANYONE else _peer(text)


def _peer(text: str) -> str:
    try:
        public_key_from_peer_id(text)
    except Invalid:
        raise BadInput(
            f"--grant/--for/PEER: {text!r} is not a node's peer id (12D3KooW...)"
        ) from None
    return text


def _grant_and_offer(home: Home, dataset_id: bytes, peers: list[str]) -> bool:
    """Records the grants; tells a running daemon to serve the dataset (False: none runs)."""
    now = time.time_ns() // 1_000_000
    conn = open_sync(home.db)
    try:
        run_transaction(conn, lambda c: access.grant(c, dataset_id, peers, now))
    finally:
        conn.close()
    try:
        ApiClient(home).post("/v1/data/offer", {"dataset_id": dataset_id.hex()})
    except NotRunning:
        return False
    except HomeError as exc:
        raise failure(exc) from None
    return True


@data.command()
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--from", "sources", multiple=True, help="holder multiaddr or peer id (repeat); default: DHT"
)
@click.option(
    "--window", type=click.IntRange(1, 256), help="requests in flight per holder [default: adapts]"
)
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
    window: int | None,
    bulk: bool,
    home_dir: str | None,
    as_json: bool,
) -> None:
    """Fetch DATASET and write it under --out: through the running daemon (holders from
    --from, else found in the DHT and among its peers), else with a host of its own."""
    home = _home(home_dir, create=True)
    dataset_id = _dataset_id(dataset, home)
    for source in sources:
        if "/p2p/" not in source and not source.startswith(("12D3Koo", "Qm")):
            raise BadInput(f"--from: {source!r} is neither a multiaddr with /p2p/ nor a peer id")
    body = {
        "dataset_id": dataset_id.hex(), "out": str(out.absolute()), "from": list(sources),
        "window": window, "bulk": bulk,
    }  # fmt: skip
    try:
        ApiClient(home).post("/v1/data/get", body)
    except NotRunning:
        result = _get_standalone(home, dataset_id, out, list(sources), window=window, bulk=bulk)
    except HomeError as exc:
        raise failure(exc) from None
    else:
        result = _follow(home, dataset_id)
    if result.get("sealed") and not result.get("opened"):  # on stderr: stdout is the result
        click.echo(_unopened_note(out), err=True)
    emit(as_json, result, lambda r: f"{r['dataset_id']} -> {r['out']}")


def _unopened_note(out: Path) -> str:
    return (
        f"note: the dataset is sealed to one node's key, and with no daemon running here this "
        f"get has none: {out / SEALED_DIR} holds its ciphertext. Start the node it is sealed "
        "to and get it through that node's daemon, which opens it"
    )


def _follow(home: Home, dataset_id: bytes) -> dict[str, Any]:
    """Waits for the daemon's fetch to end, with a progress line (on a terminal)."""
    client, path = ApiClient(home), f"/v1/data/get?dataset_id={dataset_id.hex()}"
    while True:
        try:
            state = client.get(path)
        except HomeError as exc:
            raise Failure(f"lost the daemon: {exc}") from None
        if state["state"] == "failed":
            peer_id = identity.read_identity(home)["peer_id"]
            raise Failure(state["error"] + _grant_hint(state["error"], dataset_id, peer_id))
        if state["state"] == "complete":
            return dict(state["result"])
        if sys.stderr.isatty():
            conn = open_sync(home.db)
            try:
                rows = journal.transfers(conn, dataset_id)
            finally:
                conn.close()
            if rows:
                r = rows[0]
                print(f"\r{r.bytes_have >> 20}/{r.bytes_total >> 20} MiB", end="", file=sys.stderr)
        time.sleep(POLL_S)  # a person watching, not synchronisation


def _grant_hint(error: str, dataset_id: bytes, peer_id: str | None) -> str:
    """The next step when a holder answered but refused: it has not granted us the dataset.

    ``peer_id`` is None for a get with a throwaway key (no daemon), which no grant can name.
    """
    if "does not serve it to us" not in error:
        return ""
    if peer_id is None:
        return (
            "; with no daemon running here this get used a throwaway key: the holder can serve "
            f"it to anyone (`idlegrid data grant {dataset_id.hex()} '*'`), or start this node "
            "and get it through the daemon once the holder grants it to the node's peer id"
        )
    grant = f"idlegrid data grant {dataset_id.hex()} {peer_id}"
    return f"; the holder can grant it to this node: `{grant}`"


def _get_standalone(
    home: Home, dataset_id: bytes, out: Path, sources: list[str], *, window: int | None, bulk: bool
) -> dict[str, Any]:
    # libp2p is imported only here: it costs every other command a second of start-up.
    from node.transfer.commands import get_dataset  # noqa: PLC0415
    from node.transfer.fetcher import FetchFailed  # noqa: PLC0415
    from p2p.host import DialError  # noqa: PLC0415

    if not sources:
        raise BadInput("--from: needed when no daemon runs here (a daemon finds holders itself)")
    for source in sources:
        if "/p2p/" not in source:
            raise BadInput(
                f"--from: {source!r}: with no daemon running here, give a multiaddr ending in "
                "/p2p/<peer id> (only a daemon locates a bare peer id)"
            )
    run = functools.partial(get_dataset, home, dataset_id, out, sources, window=window, bulk=bulk)
    try:
        return dict(trio.run(run))
    except Invalid as exc:
        raise Failure(f"refused: {exc}") from None
    except ValueError as exc:  # a --from that is not a multiaddr with /p2p/
        raise BadInput(str(exc)) from None
    except (FetchFailed, DialError) as exc:
        raise Failure(str(exc) + _grant_hint(str(exc), dataset_id, None)) from None
    except UnsafeTarget as exc:
        raise Failure(f"refused: {exc}") from None
    except CorruptBlob as exc:
        raise Failure(f"{exc}: it was set aside; run the same get again") from None


@data.command()
@click.argument("dataset", required=False)
@home_option
@json_option
def status(dataset: str | None, home_dir: str | None, as_json: bool) -> None:
    """Transfers recorded here: state, progress, rate and time left (while a fetch runs),
    bytes moved, sources, and each route's probe (round trip, rate, requests in flight
    chosen for it). ORIGIN "for tasks": fetched
    by this worker for a task, deleted when another task needs the room. COPY "yes": written
    out once for tasks to link to (its files' size again on disk)."""
    home = _home(home_dir)
    wanted = _dataset_id(dataset, home) if dataset else None
    trees = local.trees(home.root)
    conn = open_sync(home.db)
    try:
        for_tasks = cache.cached(conn)
        rows = [
            {**vars(r), "dataset_id": r.dataset_id.hex(),
             "chunk_kib": -(-r.chunk_bytes // 1024),  # the size it was cut in, rounded up
             "for_tasks_used_ms": for_tasks.get(r.dataset_id),
             "written_out": trees.has(r.dataset_id),
             "sources": {p: vars(s) for p, s in journal.sources(conn, r.dataset_id).items()},
             "routes": [vars(x) for x in access.probes(conn, r.dataset_id)]}
            for r in journal.transfers(conn, wanted)
        ]  # fmt: skip
    finally:
        conn.close()
    now = int(time.time() * 1000)
    for row in rows:
        row["running"] = _running(row, now)
        row["rate_bps"], row["eta_s"] = _rate_and_eta(row, now)
    if wanted is not None and not rows:
        raise BadInput(f"no dataset {wanted.hex()[:16]} here")
    emit(as_json, rows, _status_table)


def _running(row: dict[str, Any], now_ms: int) -> bool:
    """Whether a fetch drives this transfer now. A running one records the transfer when it
    opens and its routes every second, so nothing recorded for :data:`LIVE_MS` means a fetch
    that ended or was killed (a later ``get`` resumes it)."""
    latest: int = max([row["updated_ms"], *(x["updated_ms"] for x in row["routes"])])
    return bool(row["state"] == journal.FETCHING) and now_ms - latest <= LIVE_MS


def _rate_and_eta(row: dict[str, Any], now_ms: int) -> tuple[int | None, float | None]:
    """A running fetch's rate (its used routes' together) and the seconds left at that rate;
    None for a transfer that no fetch drives now."""
    live = [
        x for x in row["routes"]
        if x["state"] == "used" and now_ms - x["updated_ms"] <= LIVE_MS
    ]  # fmt: skip
    if not row["running"] or not live:
        return None, None
    rate = sum(int(x["rate_bps"]) for x in live)
    left = row["bytes_total"] - row["bytes_have"]
    return rate, (round(left / rate, 1) if rate else None)


def _status_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no transfers"
    lines = [("DATASET", "ORIGIN", "STATE", "PROGRESS", "RATE", "ETA", "MOVED", "CHUNK",
              "SOURCES", "COPY")]  # fmt: skip
    for r in rows:
        pct = 100 * r["bytes_have"] // max(r["bytes_total"], 1)
        bar = "#" * (pct // 10) + "." * (10 - pct // 10)
        origin = r["origin"] if r["for_tasks_used_ms"] is None else "for tasks"
        state = "stopped" if r["state"] == journal.FETCHING and not r["running"] else r["state"]
        lines.append((
            r["dataset_id"][:16], origin, state,
            f"[{bar}] {pct}% of {r['bytes_total']} B",
            "-" if r["rate_bps"] is None else f"{r['rate_bps'] / 1e6:.1f} MB/s",
            "-" if r["eta_s"] is None else f"{r['eta_s']:.0f} s", f"{r['bytes_moved']} B",
            f"{r['chunk_kib']} KiB", str(len(r["sources"])), "yes" if r["written_out"] else "-",
        ))  # fmt: skip
    routes = [("  ROUTE OF", "PEER", "STATE", "RTT", "RATE", "WINDOW", "VIA")]
    for r in rows:
        for x in r["routes"]:
            rtt = "-" if x["rtt_us"] is None else f"{x['rtt_us'] / 1000:.1f} ms"
            routes.append((
                f"  {r['dataset_id'][:16]}", short(x["peer_id"]), x["state"], rtt,
                f"{x['rate_bps'] / 1e6:.1f} MB/s", str(x["window"]), x["route"],
            ))  # fmt: skip
    return table(lines) + ("\n" + table(routes) if len(routes) > 1 else "")


@data.command("rm")
@click.argument("dataset")
@home_option
@json_option
def remove(dataset: str, home_dir: str | None, as_json: bool) -> None:
    """Delete DATASET here (added, fetched, or placed for a job): its record, grants, the
    chunks no other dataset here uses, and its copy written out for tasks. A running daemon
    stops serving it first."""
    home = _home(home_dir)
    dataset_id = _dataset_id(dataset, home)
    try:
        result = ApiClient(home).post("/v1/data/remove", {"dataset_id": dataset_id.hex()})
    except NotRunning:
        try:
            store, trees = local.chunk_store(home.root), local.trees(home.root)
            removed = local.remove(home.db, store, trees, dataset_id)
        except KeyError:
            raise BadInput(f"no dataset {dataset_id.hex()[:16]} here") from None
        result = {"dataset_id": dataset_id.hex(), **vars(removed)}
    except HomeError as exc:
        raise failure(exc) from None
    emit(as_json, result, lambda r: (
        f"removed {r['dataset_id'][:16]}: {r['chunks_deleted']} chunks, "
        f"{r['bytes_freed'] / (1 << 20):.1f} MB freed "
        f"({r['chunks_kept']} kept: other datasets use them)"
    ))  # fmt: skip


@data.command()
@click.option("--listen", default="/ip4/127.0.0.1/tcp/0", show_default=True)
@click.option("--public", is_flag=True, help="serve every dataset to any peer, granted or not")
@home_option
def serve(listen: str, public: bool, home_dir: str | None) -> None:
    """Serve the complete datasets here (to the peers granted each, or with --public to any
    peer) until interrupted, with a throwaway key; prints the address. Grants are read once,
    at start. A running daemon serves them itself, with the node's key."""
    # libp2p only when used: it costs every other command a second of start-up.
    from node.transfer.commands import serve_datasets  # noqa: PLC0415
    from p2p.host import ListenError, check_listen  # noqa: PLC0415

    home = _home(home_dir, create=True)
    try:
        try:
            check_listen([listen])
        except ValueError as exc:  # its own only: serve_datasets parses the address again
            raise BadInput(f"--listen: {exc}") from None
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve_datasets, home, listen, public)
    except ListenError as exc:  # taken now, or since the check
        raise Failure(f"--listen: {exc.strerror}") from None
