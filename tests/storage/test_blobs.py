"""The content-addressed blob store: layout, dedup, streaming, validation, corruption."""

from __future__ import annotations

import errno
import os
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from storage.blobs import BlobStore
from storage.errors import CorruptBlob

MIB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_put_get_round_trip(store: BlobStore) -> None:
    digest = store.put(b"hello grid")
    assert digest == blake3(b"hello grid").hexdigest()
    assert store.path(digest) == store.root / digest[:2] / digest
    assert store.has(digest)
    assert store.get(digest) == b"hello grid"
    assert store.verify(digest)
    assert list(store.iter_digests()) == [digest]


def test_empty_blob(store: BlobStore) -> None:
    digest = store.put(b"")
    assert store.get(digest) == b""


def test_identical_content_is_stored_once(store: BlobStore) -> None:
    first = store.put(b"same bytes")
    second = store.put_stream([b"same ", b"bytes"])
    assert first == second
    assert list(store.iter_digests()) == [first]
    assert list((store.root / "tmp").iterdir()) == []


def test_missing_blob(store: BlobStore) -> None:
    digest = blake3(b"never stored").hexdigest()
    assert not store.has(digest)
    assert not store.verify(digest)
    assert not store.delete(digest)
    with pytest.raises(FileNotFoundError):
        store.get(digest)
    with pytest.raises(FileNotFoundError):
        store.open(digest)


def test_put_file_streams_without_loading_the_file(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    chunk = os.urandom(MIB)
    with source.open("wb") as out:
        for i in range(16):
            out.write(bytes([i]) + chunk[1:])
    expected = blake3(source.read_bytes()).hexdigest()

    tracemalloc.start()
    try:
        digest = store.put_file(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest == expected
    assert peak < 4 * MIB  # a couple of 1 MiB chunks, not the 16 MiB file
    assert store.verify(digest)


def test_put_stream_of_many_chunks(store: BlobStore) -> None:
    chunks = [os.urandom(256 * 1024) for _ in range(12)]
    digest = store.put_stream(iter(chunks))
    assert store.get(digest) == b"".join(chunks)


def test_put_hashed_stores_under_the_given_digest_and_reads_verify_it(
    store: BlobStore,
) -> None:
    data, other = b"chunk" * 1000, b"other" * 1000
    digest = blake3(data).hexdigest()
    store.put_hashed(data, digest, sync=False)
    assert store.get(digest) == data
    wrong = blake3(b"not these bytes").hexdigest()
    store.put_hashed(other, wrong)  # a caller's bug: not trusted when read
    with pytest.raises(CorruptBlob):
        store.get(wrong)
    assert not store.has(wrong)  # quarantined


def test_failing_stream_stores_nothing(store: BlobStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        store.put_stream(chunks())
    assert list(store.iter_digests()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_streaming_read(store: BlobStore) -> None:
    data = os.urandom(3 * MIB + 5)
    digest = store.put(data)
    with store.open(digest) as reader:
        parts = list(iter(lambda: reader.read(MIB), b""))
    assert b"".join(parts) == data


BAD_DIGESTS = [
    "../etc/passwd",
    "../" + "a" * 61,
    "aa/../../" + "a" * 55,
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "",
    "g" * 64,
    "a" * 64 + "\n",
    "/" + "a" * 63,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
@pytest.mark.parametrize("method", ["path", "has", "get", "open", "verify", "delete"])
def test_bad_digests_are_rejected(store: BlobStore, digest: str, method: str) -> None:
    before = sorted(store.root.parent.rglob("*"))
    with pytest.raises(ValueError, match="not a blob digest") as caught:
        getattr(store, method)(digest)
    assert repr(digest)[:60] in str(caught.value)
    assert sorted(store.root.parent.rglob("*")) == before


def test_corrupt_blob_is_detected_and_quarantined(store: BlobStore) -> None:
    data = os.urandom(64 * 1024)
    digest = store.put(data)
    final = store.path(digest)
    corrupt(final)

    with pytest.raises(CorruptBlob) as caught:
        store.get(digest)

    assert caught.value.digest == digest
    assert caught.value.path == final
    quarantined = caught.value.quarantined_to
    assert quarantined is not None
    assert quarantined.parent == store.root / "quarantine"
    assert quarantined.read_bytes() != data
    # It now counts as missing, so fetching it again works.
    assert not store.has(digest)
    assert store.put(data) == digest
    assert store.get(digest) == data


def test_verify_quarantines_a_corrupt_blob(store: BlobStore) -> None:
    digest = store.put(b"x" * 1000)
    corrupt(store.path(digest))
    assert not store.verify(digest)
    assert not store.has(digest)
    assert len(list((store.root / "quarantine").iterdir())) == 1


def test_streaming_read_detects_corruption_at_the_end(store: BlobStore) -> None:
    digest = store.put(os.urandom(2 * MIB))
    corrupt(store.path(digest))
    with store.open(digest) as reader, pytest.raises(CorruptBlob):
        while reader.read(MIB):
            pass
    assert not store.has(digest)


def test_leftover_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    kept = BlobStore(root).put(b"keep me")
    (root / "tmp" / "put-crashed.part").write_bytes(b"half a blob")
    (root / "tmp" / "put-other.part").write_bytes(b"")

    reopened = BlobStore(root)

    assert list((root / "tmp").iterdir()) == []
    assert reopened.get(kept) == b"keep me"


def test_layout_is_private_and_listing_ignores_strays(store: BlobStore) -> None:
    digest = store.put(b"payload")
    for directory in (store.root, store.root / "tmp", store.root / "quarantine"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path(digest).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o600
    (store.root / "README").write_text("not a blob")
    (store.path(digest).parent / "notes.txt").write_text("not a blob")
    assert list(store.iter_digests()) == [digest]


def test_delete(store: BlobStore) -> None:
    digest = store.put(b"short-lived")
    assert store.delete(digest)
    assert not store.has(digest)
    assert list(store.iter_digests()) == []


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_unsynced_puts_are_readable_and_made_durable_by_one_sync(
    store: BlobStore, fsyncs: list[int]
) -> None:
    blobs = [os.urandom(1000 + i) for i in range(20)]
    digests = [store.put(b, sync=False) for b in blobs]
    assert fsyncs == []  # the point: no fsync per chunk while a fetch streams in
    assert [store.get(d) for d in digests] == blobs
    store.sync()
    assert fsyncs == []  # one syncfs for the whole filesystem, not a fsync per blob
    assert store._unsynced == set()


def test_sync_without_syncfs_fsyncs_each_pending_blob_and_directory(
    store: BlobStore, fsyncs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.blobs.syncfs", lambda root: False)
    digests = {store.put(os.urandom(100), sync=False) for _ in range(5)}
    store.put(os.urandom(100))  # a synced put is not pending
    before = len(fsyncs)
    store.sync()
    shards = {d[:2] for d in digests}
    assert len(fsyncs) - before == len(digests) + len(shards) + 1  # blobs, shards, root
    store.sync()
    assert len(fsyncs) - before == len(digests) + len(shards) + 1  # nothing left to do


def test_adopt_moves_a_hashed_file_in_without_copying_it(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    part = tmp_path / "fetched.part"
    part.write_bytes(data)
    inode = part.stat().st_ino
    store.adopt(part, blake3(data).hexdigest())
    digest = blake3(data).hexdigest()
    assert store.get(digest) == data
    assert store.path(digest).stat().st_ino == inode  # renamed: written once
    assert not part.exists()
    part.write_bytes(data)  # the same blob again: the duplicate goes
    store.adopt(part, digest)
    assert not part.exists() and store.get(digest) == data


def test_adopt_across_filesystems_copies_and_checks(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(5000)
    part = tmp_path / "fetched.part"
    part.write_bytes(data)
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(src) == part:  # the part is on another filesystem; the store's temp is not
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    kept = store.put(data)  # the same bytes held already: a wrong digest must not cost them
    with pytest.raises(ValueError, match="not"):
        store.adopt(part, blake3(b"other bytes").hexdigest())  # a copy that does not match
    assert list(store.iter_digests()) == [kept] and part.exists()
    store.adopt(part, blake3(data).hexdigest())
    assert store.get(blake3(data).hexdigest()) == data and not part.exists()
