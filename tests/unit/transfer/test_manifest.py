"""Manifest encoding, dataset ids and validation of what a peer sends (pure, no I/O)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.transfer.manifest import (
    Chunk,
    Dir,
    File,
    Manifest,
    ManifestLimits,
    check_path,
    decode_manifest,
    validate,
)

H = blake3(b"x").digest()


def simple() -> Manifest:
    return Manifest(
        chunks=(Chunk(H, 10), Chunk(H, 5)),
        files=(File("a/b.txt", 0o644, 12, 0), File("c", 0o600, 3, 12)),
        dirs=(Dir("a", 0o755),),
    )


def test_round_trip_and_id() -> None:
    m = simple()
    data = m.encode()
    assert decode_manifest(data, m.dataset_id()) == m
    assert m.dataset_id() == blake3(data).digest()
    assert m.chunks_of(m.files[0], m.chunk_offsets()) == range(0, 2)
    assert m.chunks_of(m.files[1], m.chunk_offsets()) == range(1, 2)


def test_wrong_id_is_refused() -> None:
    with pytest.raises(Invalid, match="does not hash"):
        decode_manifest(simple().encode(), bytes(32))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a//b", "empty"),
        ("a/./b", "'.'"),
        ("", "1..4096"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "control"),
        ("x" * 256, "longer than 255"),
        ("/".join(["d"] * 65), "deeper"),
    ],
)
def test_hostile_paths(path: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        check_path(path, "p")


def refused(m: Manifest, limits: ManifestLimits | None = None) -> Invalid:
    with pytest.raises(Invalid) as info:
        validate(m, limits or ManifestLimits())
    return info.value


def test_structural_refusals() -> None:
    base = simple()
    cases = {
        "files[0]": Manifest(base.chunks, (File("big", 0o644, 16, 0),)),
        "files[1].path": Manifest(base.chunks, (File("a", 0o644, 1, 0), File("a", 0o644, 1, 0))),
        "files[0].mode": Manifest(base.chunks, (File("s", 0o4755, 1, 0),)),
        "chunks[0].hash": Manifest((Chunk(b"short", 1),), ()),
        "chunks[0].size": Manifest((Chunk(H, 0),), ()),
    }
    for what, m in cases.items():
        assert refused(m).what == what
    # a file under a file, in either order; a file that is also a listed directory
    under = Manifest(base.chunks, (File("a", 0o644, 1, 0), File("a/b", 0o644, 1, 0)))
    assert "under the file" in refused(under).reason
    clash = Manifest(base.chunks, (File("a", 0o644, 1, 0),), (Dir("a/b", 0o755),))
    assert refused(clash).what == "files[0].path"


def test_size_limits() -> None:
    limits = ManifestLimits(max_total_bytes=14, max_chunk_bytes=8)
    assert refused(simple(), limits).what == "chunks[0].size"
    assert "over 14" in refused(simple(), ManifestLimits(max_total_bytes=14)).reason
    many = msgpack.packb({"v": 1, "chunks": [], "files": [["f", 0, 0, 0]] * 3, "dirs": []})
    with pytest.raises(Invalid, match="files"):
        decode_manifest(many, None, ManifestLimits(max_files=2))


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"v": 2, "chunks": [], "files": [], "dirs": []},
        {"v": 1, "chunks": [[H]], "files": [], "dirs": []},
        {"v": 1, "chunks": [], "files": [["a", 0o644, 1.5, 0]], "dirs": []},
        {"v": 1, "chunks": [], "files": [["a", 0o644, True, 0]], "dirs": []},
        {"v": 1, "chunks": [], "files": [], "dirs": [], "extra": 1},
    ],
)
def test_malformed_wire(raw: object) -> None:
    with pytest.raises(Invalid):
        decode_manifest(msgpack.packb(raw), None)


name = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
paths = st.lists(name, min_size=1, max_size=5).map("/".join) | st.sampled_from(
    ["..", "/", "a/..", "/abs", ".", "a/./b", "a\\b"]
)


@settings(max_examples=300, deadline=None)
@given(paths)
def test_any_accepted_path_stays_inside(path: str) -> None:
    """Whatever passes check_path is a plain relative path that cannot climb out."""
    try:
        check_path(path, "p")
    except Invalid:
        return
    parts = path.split("/")
    assert not path.startswith("/") and ".." not in parts and "." not in parts and "" not in parts
    assert all("\x00" not in p and "\\" not in p for p in parts)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    with contextlib.suppress(Invalid):
        decode_manifest(data, None)
