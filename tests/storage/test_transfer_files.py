"""Chunking a real folder into a real blob store and writing it back out, safely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.transfer.manifest import Chunk, Dir, File, Manifest, decode_manifest
from storage import transfer_journal as journal
from storage.blobs import BlobStore
from storage.db import open_sync
from storage.transfer_files import (
    UnsafeTarget,
    UnsupportedEntry,
    build,
    discard_tree,
    materialize,
    scan,
)


def make_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "zeros.bin").write_bytes(bytes(200_000))
    for i in range(50):
        (root / "sub" / f"s{i:02}.txt").write_text(f"small file {i}\n" * (i + 1))
    (root / "sub" / "deep" / "empty.txt").write_bytes(b"")
    (root / "sub" / "deep" / "ro.txt").write_bytes(b"read only")
    (root / "sub" / "deep" / "ro.txt").chmod(0o444)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for path in sorted(root.rglob("*")):
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes() if path.is_file() else None
        out[path.relative_to(root).as_posix()] = (mode, data)
    return out


def test_build_then_materialize_is_identical(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_tree(src)
    store = BlobStore(tmp_path / "store")
    built = build(src, store, chunk_bytes=64 << 10, pack_below=16 << 10)
    manifest = built.manifest
    assert decode_manifest(store.get(built.dataset_id.hex()), built.dataset_id) == manifest
    assert len(manifest.chunks) < 20  # 50 small files share a couple of chunks
    materialize(manifest, store, out)
    assert snapshot(out) == snapshot(src)
    materialize(manifest, store, out)  # again over itself: same result
    assert snapshot(out) == snapshot(src)
    assert build(src, BlobStore(tmp_path / "s2"), 64 << 10, 16 << 10).dataset_id == built.dataset_id


def test_single_file_dataset(tmp_path: Path) -> None:
    (tmp_path / "one.bin").write_bytes(b"abc" * 1000)
    store = BlobStore(tmp_path / "store")
    manifest = build(tmp_path / "one.bin", store).manifest
    assert [f.path for f in manifest.files] == ["one.bin"]
    materialize(manifest, store, tmp_path / "out")
    assert (tmp_path / "out" / "one.bin").read_bytes() == b"abc" * 1000


def test_links_and_fifos_are_refused_on_add(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsupportedEntry, match="link"):
        scan(tmp_path / "d")
    (tmp_path / "d" / "link").unlink()
    os.mkfifo(tmp_path / "d" / "fifo")
    with pytest.raises(UnsupportedEntry, match="fifo"):
        scan(tmp_path / "d")


def test_a_planted_symlink_cannot_lead_a_write_outside(tmp_path: Path) -> None:
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / "evil").symlink_to(outside)
    store = BlobStore(tmp_path / "store")
    h = bytes.fromhex(store.put(b"pwned"))
    manifest = Manifest((Chunk(h, 5),), (File("evil/x", 0o644, 5, 0),))
    with pytest.raises(UnsafeTarget, match="evil"):
        materialize(manifest, store, out)
    assert list(outside.iterdir()) == []
    # a file over a planted link replaces the link, not its target
    (outside / "target").write_bytes(b"keep")
    (out / "f").symlink_to(outside / "target")
    materialize(Manifest((Chunk(h, 5),), (File("f", 0o644, 5, 0),)), store, out)
    assert (outside / "target").read_bytes() == b"keep"
    assert not (out / "f").is_symlink() and (out / "f").read_bytes() == b"pwned"


names = st.sampled_from(["a", "b", "..", ".", "evil", "x y", ""])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(names, min_size=1, max_size=4).map("/".join), min_size=1, max_size=6))
def test_hostile_manifests_write_nothing_outside(tmp_path: Path, paths: list[str]) -> None:
    """Whatever the paths, a manifest is either refused or writes only under the target."""
    case = tmp_path / os.urandom(4).hex()
    outside, out = case / "outside", case / "out"
    outside.mkdir(parents=True)
    out.mkdir()
    (out / "evil").symlink_to(outside)
    store = BlobStore(case / "store")
    h = bytes.fromhex(store.put(b"z"))
    files = tuple(File(p, 0o644, 1, 0) for p in paths)
    raw = Manifest((Chunk(h, 1),), files, (Dir("a", 0o755),)).encode()
    try:
        manifest = decode_manifest(raw, None)
        materialize(manifest, store, out)
    except (ValueError, OSError):
        pass
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in case.iterdir()) == ["out", "outside", "store"]


def test_journal_reconcile_and_status(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(5000))
    store = BlobStore(tmp_path / "store")
    built = build(tmp_path / "f", store, chunk_bytes=1024, pack_below=512)
    conn = open_sync(tmp_path / "node.db")
    did = built.dataset_id
    journal.open_transfer(conn, did, built.manifest, journal.FETCHED, 1)
    journal.open_transfer(conn, did, built.manifest, journal.FETCHED, 2)  # idempotent
    assert journal.missing(conn, did) == [0, 1, 2, 3, 4]
    store.delete(built.manifest.chunks[2].hash.hex())
    assert journal.reconcile(conn, did, built.manifest, store.has) == 4
    assert journal.missing(conn, did) == [2]
    (row,) = journal.transfers(conn)
    assert (row.chunks_have, row.bytes_have, row.state) == (4, 5000 - 1024, journal.FETCHING)
    store.delete(built.manifest.chunks[0].hash.hex())  # lost after it was journalled
    assert journal.reconcile(conn, did, built.manifest, store.has) == 0
    assert journal.missing(conn, did) == [0, 2]


async def test_discard_tree_deletes_in_a_thread_even_when_cancelled(tmp_path: Path) -> None:
    tree = tmp_path / "task"
    (tree / "data" / "sub").mkdir(parents=True)
    (tree / "data" / "sub" / "f").write_bytes(b"x")
    os.chmod(tree / "data", 0o500)  # as a dataset's folder may be
    with trio.CancelScope() as scope:
        scope.cancel()  # a cleanup in a finally, as the task is being cancelled
        await discard_tree(tree)
    assert not tree.exists()
