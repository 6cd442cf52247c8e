"""Dataset transfer throughput against plain TCP and a bare libp2p stream, in one run.

Run: ``.venv/bin/python bench/transfer.py [--mib 128] [--sources 3]``

On 127.0.0.1, with every sender in its own child process and the receiver in this one:

* ``tcp``: the dataset's bytes, read from its files into one buffer and sent over one plain
  trio TCP connection (the baseline: what moving these bytes costs with no protocol at all);
* ``tcp block``: as many bytes, one 256 KiB block sent again and again (never out of the
  sender's cache: the old baseline, kept for comparison);
* ``stream``: that block written on one bare py-libp2p stream (TCP + Noise + Yamux);
* ``transfer``: ``idlegrid data serve`` in a child, a dataset fetched by
  :func:`node.transfer.fetcher.fetch` (hash-checked, journalled, stored):
  * the folder as it is (``data add PATH``), on the libp2p stream, then on the bulk channel,
    which seals every frame with AES-GCM since the chunks are plaintext;
  * the folder sealed to the receiver (``data add PATH --for PEER``, as a task's inputs are,
    in that command's 4 MiB chunks, ``--sealed-chunk-kib`` to change), on the bulk channel,
    which moves that ciphertext as it is: the RESULT figure;
* ``multi``: the sealed dataset from ``--sources`` holders at once.

The folder is random bytes (incompressible: zstd declines every chunk), 90 % in four big
files and 10 % in small ones; the multi-source copy is opened, written out and compared.
Each bulk transfer from one holder, and the baseline, is the better of two runs
(:func:`transfers`). Ends with ``RESULT mb_per_s=... ratio_tcp=... ratio_libp2p_stream=...
multi_source_mb_per_s=... open_mb_per_s=... open_ratio_tcp=... tcp_mb_per_s=...
ratio_tcp_block=...`` (``open_*``: the plain folder on the sealed channel).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from nacl.signing import SigningKey

from consensus.peer_id import peer_id_from_public_key
from consensus.transfer.manifest import decode_manifest
from node.transfer.fetcher import fetch
from node.transfer.sealed import SEALED_CHUNK_BYTES, open_tree, seal_tree
from p2p.host import open_host
from storage.blobs import BlobStore
from storage.db import Database
from storage.transfer_files import materialize

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "/idlegrid/bench/bulk/1"
BLOCK = 256 << 10
WINDOW: list[int | None] = [None]  # None: each link's window adapts (consensus.transfer.links)
SEALED_CHUNK_KIB = [SEALED_CHUNK_BYTES >> 10]  # what `data add --for` chooses


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "node", *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


# --- senders, run as children -------------------------------------------------------------


async def tcp_sender(size: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    stream = await listeners[0].accept()
    block = os.urandom(BLOCK)
    for _ in range(size // BLOCK):
        await stream.send_all(block)
    await stream.aclose()


async def files_sender(folder: str) -> None:
    """Every file under ``folder``, read into one reused buffer and written to the socket."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    stream = await listeners[0].accept()
    buffer = memoryview(bytearray(1 << 20))
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buffer):
                await stream.send_all(buffer[:n])
    await stream.aclose()


async def stream_sender(size: int) -> None:
    done = trio.Event()
    block = os.urandom(BLOCK)

    async def handler(stream: object) -> None:
        for _ in range(size // BLOCK):
            await stream.write(block)  # type: ignore[attr-defined]
        await stream.close()  # type: ignore[attr-defined]
        done.set()

    async with open_host(os.urandom(32)) as host:
        host.set_stream_handler(PROTOCOL, handler)
        print(host.addrs[0], flush=True)
        await done.wait()


# --- the measurements ---------------------------------------------------------------------


async def measure_tcp(size: int) -> float:
    """One block repeated: the bytes never leave the sender's cache."""
    return await receive_tcp(child("--tcp-sender", str(size)), size // BLOCK * BLOCK)


async def measure_files_tcp(folder: Path) -> float:
    """The files under ``folder``, read and sent: the baseline for moving a dataset."""
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return await receive_tcp(child("--files-sender", str(folder)), size)


async def receive_tcp(proc: subprocess.Popen[str], size: int) -> float:
    """MB/s of the ``size`` bytes a sender child sends on the port it prints."""
    port = int(first_line(proc))
    start = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = 0
    while chunk := await stream.receive_some(1 << 20):
        got += len(chunk)
    elapsed = time.perf_counter() - start
    proc.wait()
    assert got == size, got
    return got / elapsed / 1e6


async def measure_stream(size: int) -> float:
    proc = child("--stream-sender", str(size))
    addr = first_line(proc)
    async with open_host(os.urandom(32)) as host:
        peer = await host.connect(addr)
        start = time.perf_counter()
        stream = await host.new_stream(peer, PROTOCOL)
        got = 0
        try:
            while chunk := await stream.read(1 << 20):
                got += len(chunk)
        except EOFError:
            pass
        elapsed = time.perf_counter() - start
    proc.wait()
    assert got == size // BLOCK * BLOCK, got
    return got / elapsed / 1e6


async def measure_transfer(
    work: Path, dataset_id: bytes, addrs: list[str], tag: str, seed: bytes, *, bulk: bool = True
) -> tuple[float, BlobStore]:
    """MB/s of one fetch by a fresh receiver; its store is removed after, but for ``multi``
    (on tmpfs the copies would crowd the memory the next runs write to)."""
    async with open_host(seed) as host, await Database.open(work / f"{tag}.db") as db:
        peers = [await host.connect(a) for a in addrs]
        store = BlobStore(work / f"{tag}-chunks")
        # The receiver syncs its store's filesystem as chunks land: without this, its first
        # sync would also write out the holders' copies and the earlier runs' files.
        await trio.to_thread.run_sync(os.sync)
        start = time.perf_counter()
        result = await fetch(host, db, store, dataset_id, peers, bulk=bulk, window=WINDOW[0])
        elapsed = time.perf_counter() - start
    used = {p[-6:]: s.chunks for p, s in result.sources.items()}
    print(f"  {tag}: {result.chunks_moved} chunks in {elapsed:.2f} s from {used}")
    if tag != "multi":
        shutil.rmtree(store.root)
    return result.manifest.total_bytes / elapsed / 1e6, store


def identical(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files == theirs and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def prepare(
    work: Path, size: int, holders: int, receiver: str
) -> tuple[bytes, bytes, list[subprocess.Popen[str]]]:
    """The open and the sealed dataset's ids, and the holders serving them: the first both,
    the others the sealed one (sealed once, so that every holder has the same ciphertext)."""
    data = make_folder(work / "dataset", size)
    sealed = seal_tree(data, receiver, work / "sealed")
    open_id, sealed_id, servers = add(data, work / "holder0"), b"", []
    for i in range(holders):
        home = work / f"holder{i}"
        sealed_id = add(sealed, home, "--chunk-kib", str(SEALED_CHUNK_KIB[0]))
        servers.append(cli("data", "serve", "--public", "--home", str(home)))
    return open_id, sealed_id, servers


def add(path: Path, home: Path, *extra: str) -> bytes:
    out = subprocess.run(
        [sys.executable, "-m", "node", "data", "add", str(path), "--home", str(home), *extra],
        cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return bytes.fromhex(out.stdout.strip())


def make_folder(data: Path, size: int) -> Path:
    """A folder of ``size`` bytes: 90 % in four big files, the rest in 4 KiB-60 KiB files."""
    (data / "small").mkdir(parents=True)
    for i in range(4):
        with (data / f"big{i}.bin").open("wb") as f:
            for _ in range(size * 9 // 10 // 4 // BLOCK):
                f.write(os.urandom(BLOCK))
    left, i = size // 10, 0
    while left > 0:
        n = min(left, 4096 + (i * 7919) % (56 << 10))
        (data / "small" / f"{i:05}.dat").write_bytes(os.urandom(n))
        left, i = left - n, i + 1
    return data


async def transfers(work: Path, size: int, sources: int) -> dict[str, float]:
    """Every transfer's MB/s, the files baseline's, and whether the copy arrived whole.

    The bulk transfers from one holder run twice, interleaved, and the files baseline before
    and after them: each figure is the better of its two, since a noisy moment on 2 shared
    cores (or the memory the last run freed) lowers either side at random.
    """
    seed = os.urandom(32)
    receiver = peer_id_from_public_key(bytes(SigningKey(seed).verify_key))
    open_id, sealed_id, servers = prepare(work, size, max(sources, 1), receiver)
    try:
        got = {"tcp": await measure_files_tcp(work / "sealed")}
        addrs = [first_line(s).split()[-1] for s in servers]
        for run in range(2):
            for tag, dataset_id in (("sealed", sealed_id), ("open", open_id)):
                mb, _ = await measure_transfer(work, dataset_id, addrs[:1], f"{tag}{run}", seed)
                got[tag] = max(got.get(tag, 0.0), mb)
        got["p2p"], _ = await measure_transfer(work, open_id, addrs[:1], "p2p", seed, bulk=False)
        got["multi"], store = await measure_transfer(work, sealed_id, addrs, "multi", seed)
        got["tcp"] = max(got["tcp"], await measure_files_tcp(work / "sealed"))
    finally:
        for s in servers:
            s.terminate()
            s.wait()
    manifest = decode_manifest(store.get(sealed_id.hex()), sealed_id)
    materialize(manifest, store, work / "out")
    open_tree(work / "out", SigningKey(seed))
    got["same"] = identical(work / "dataset", work / "out")
    return got


async def main(size: int, sources: int) -> None:
    logging.disable(logging.WARNING)
    load_before = os.getloadavg()[0]
    hot = await measure_tcp(size)
    bare = await measure_stream(size)
    with tempfile.TemporaryDirectory() as tmp:
        got = await transfers(Path(tmp), size, sources)
    tcp, one, opened, multi = got["tcp"], got["sealed"], got["open"], got["multi"]
    load = (load_before + os.getloadavg()[0]) / 2
    print(f"{size >> 20} MiB on 127.0.0.1, senders in child processes")
    print(
        f"  load average (1 min) {load:.1f} on {os.cpu_count()} CPUs;"
        f" window {WINDOW[0] or 'adaptive'}; sealed chunks {SEALED_CHUNK_KIB[0]} KiB"
    )
    print(f"  arrived byte-identical: {bool(got['same'])}")
    print(f"  plain TCP, the dataset's files {tcp:8.1f} MB/s   1.00   (the baseline)")
    print(f"  plain TCP, one block repeated  {hot:8.1f} MB/s   {hot / tcp:.3f}")
    print(f"  bare libp2p stream             {bare:8.1f} MB/s   {bare / tcp:.3f}")
    print(f"  open dataset, libp2p stream    {got['p2p']:8.1f} MB/s   {got['p2p'] / tcp:.3f}")
    print(f"  open dataset, bulk, sealed     {opened:8.1f} MB/s   {opened / tcp:.3f}")
    print(f"  sealed dataset, bulk, plain    {one:8.1f} MB/s   {one / tcp:.3f}   (RESULT)")
    print(f"  sealed, bulk, {sources} sources        {multi:8.1f} MB/s   {multi / tcp:.3f}")
    print(
        f"RESULT mb_per_s={one:.1f} ratio_tcp={one / tcp:.3f} "
        f"ratio_libp2p_stream={one / bare:.3f} multi_source_mb_per_s={multi:.1f} "
        f"open_mb_per_s={opened:.1f} open_ratio_tcp={opened / tcp:.3f} tcp_mb_per_s={tcp:.1f} "
        f"ratio_tcp_block={one / hot:.3f} load={load:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="dataset size (default 128)")
    parser.add_argument("--sources", type=int, default=3, help="holders for the multi run")
    parser.add_argument(
        "--window", type=int, default=0, help="requests in flight per source (0: adapt)"
    )
    parser.add_argument(
        "--sealed-chunk-kib",
        type=int,
        default=SEALED_CHUNK_KIB[0],
        help=f"the sealed dataset's chunk size (default {SEALED_CHUNK_KIB[0]}, as data add --for)",
    )
    parser.add_argument("--tcp-sender", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--files-sender", help=argparse.SUPPRESS)
    parser.add_argument("--stream-sender", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tcp_sender:
        trio.run(tcp_sender, args.tcp_sender)
    elif args.files_sender:
        trio.run(files_sender, args.files_sender)
    elif args.stream_sender:
        trio.run(stream_sender, args.stream_sender)
    else:
        WINDOW[0] = args.window or None
        SEALED_CHUNK_KIB[0] = args.sealed_chunk_kib
        trio.run(main, args.mib << 20, args.sources)
