"""Task-file (blob) fetch throughput, over the bulk channel and in libp2p pieces, next to
plain TCP, in one run.

Run: ``.venv/bin/python bench/blobs.py [--mib 64]``

Two real nodes (libp2p on 127.0.0.1, sqlite, the market's blob service, the transfer layer's
bulk listener) in this process: one puts a file of random bytes (sealed under a fresh key) and
grants it to the other, which fetches it with :meth:`node.market.blobshare.BlobShare.fetch`
(ciphertext moved and hash-checked, key fetched, opened, stored): first over the bulk channel
(:mod:`node.market.blob_bulk`), then another file of the same size with the holder's bulk
channel off (1 MiB request/response pieces over libp2p). The baseline is the same bytes over
one plain trio TCP connection.

Both nodes share one process and one event loop, so the figures are pessimistic. The pieces
path is bound by py-libp2p's per-stream latency (the event loop idles a quarter of the time;
four pieces in flight measured 0.93x to 1.32x of one); the bulk path's transfer itself moves
several hundred MB/s here, and the whole fetch is bound by this machine's disk (the
ciphertext and the plaintext are each written and fsynced). Ends with
``RESULT blob_mb_per_s=... ratio_tcp=... pieces_mb_per_s=... ratio_pieces=...``
(``ratio_pieces``: the bulk path's rate over the pieces path's).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import trio

from config.schema import NodeSettings, P2pSettings, Settings
from node import identity
from node.daemon import NodeContext, run_node
from node.home import Home

LONG_S = 3600


async def start(nursery: trio.Nursery, root: Path, bootstrap: tuple[str, ...] = ()) -> NodeContext:
    home = Home(root)
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    conf = Settings(
        node=NodeSettings(roles=("requester",)),
        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=bootstrap,
                        announce_interval_s=LONG_S, offline_after_s=2 * LONG_S),
    )  # fmt: skip
    keys = identity.load(home, lambda: None)
    ctx: NodeContext = await nursery.start(
        lambda task_status: run_node(
            home, conf, keys, handle_signals=False, task_status=task_status
        )
    )
    return ctx


async def fetch_s(holder: NodeContext, taker: NodeContext, path: Path, *, bulk: bool) -> float:
    assert holder.market is not None and taker.market is not None
    assert holder.network is not None
    if not bulk:
        holder.market.share.bulk = None  # the holder then answers tickets with no_bulk
    ref = await holder.market.share.put(path)
    holder.market.share.grant(taker.keys.peer_id, ref.hash)
    addrs = [str(a) for a in holder.network.host.addrs]
    started = time.perf_counter()
    got = await taker.market.share.fetch(ref, lambda _peer: addrs)
    elapsed = time.perf_counter() - started
    assert got.stat().st_size == path.stat().st_size
    return elapsed


async def tcp_s(data: bytes) -> float:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    done = trio.Event()

    async def receive(stream: trio.SocketStream) -> None:
        left = len(data)
        while left:
            left -= len(await stream.receive_some(1 << 20))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, receive, listeners)
        started = time.perf_counter()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(data)
        await done.wait()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


async def main(mib: int, folder: str | None) -> None:
    data = os.urandom(mib << 20)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        root = Path(tmp)
        (root / "file").write_bytes(data)
        async with trio.open_nursery() as nursery:
            holder = await start(nursery, root / "holder")
            assert holder.network is not None
            taker = await start(nursery, root / "taker", (str(holder.network.host.addrs[0]),))
            bulk = await fetch_s(holder, taker, root / "file", bulk=True)
            (root / "file").write_bytes(os.urandom(mib << 20))  # another blob, not held yet
            pieces = await fetch_s(holder, taker, root / "file", bulk=False)
            nursery.cancel_scope.cancel()
    tcp = await tcp_s(data)
    bulk_rate, pieces_rate, tcp_rate = (mib * 1.048576 / s for s in (bulk, pieces, tcp))
    print(f"{mib} MiB blob fetched on 127.0.0.1, both nodes in one process")
    print(f"{'path':34} {'MB/s':>8} {'of TCP':>8}")
    for name, rate in (
        ("blob over the bulk channel", bulk_rate),
        ("blob in 1 MiB libp2p pieces", pieces_rate),
        ("plain trio TCP, same bytes", tcp_rate),
    ):
        print(f"{name:34} {rate:8.1f} {rate / tcp_rate:8.4f}")
    print(
        f"RESULT blob_mb_per_s={bulk_rate:.1f} ratio_tcp={bulk_rate / tcp_rate:.4f} "
        f"pieces_mb_per_s={pieces_rate:.1f} ratio_pieces={bulk_rate / pieces_rate:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--dir", help="where the nodes live (/dev/shm: no disk in the way)")
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    trio.run(main, args.mib, args.dir)
