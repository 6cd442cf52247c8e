"""Each dataset tasks use is written out once, read-only, whole or not at all; a task's folder
links to it; what a crash or a removal leaves behind is swept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.blobs import BlobStore
from storage.dataset_trees import Trees
from storage.errors import CorruptBlob
from storage.transfer_files import Built, build, link_into, remove_tree
from tests.storage.test_transfer_files import make_tree


def added(tmp_path: Path, name: str = "src") -> tuple[Built, BlobStore]:
    src = tmp_path / name
    src.mkdir()
    make_tree(src)
    store = BlobStore(tmp_path / "store")
    return build(src, store, chunk_bytes=64 << 10, pack_below=16 << 10), store


def contents(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def test_a_tree_is_the_dataset_read_only_and_written_once(tmp_path: Path) -> None:
    built, store = added(tmp_path)
    trees = Trees(tmp_path / "trees")
    assert not trees.has(built.dataset_id)
    tree = trees.build(built.dataset_id, built.manifest, store)
    assert tree == trees.path(built.dataset_id) and trees.has(built.dataset_id)
    assert contents(tree) == contents(tmp_path / "src")
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o555 if path.is_dir() else 0o444), (path, oct(mode))
    assert os.stat(tmp_path / "trees").st_mode & 0o777 == 0o700  # a requester's data: ours
    inode = (tree / "big.bin").stat().st_ino
    assert trees.build(built.dataset_id, built.manifest, store) == tree  # not written again
    assert (tree / "big.bin").stat().st_ino == inode


def test_execute_bits_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o700)
    store = BlobStore(tmp_path / "store")
    built = build(src, store)
    tree = Trees(tmp_path / "trees").build(built.dataset_id, built.manifest, store)
    assert (tree / "run.sh").stat().st_mode & 0o777 == 0o544


def test_a_bad_chunk_leaves_no_tree_and_no_partial(tmp_path: Path) -> None:
    built, store = added(tmp_path)
    store.path(built.manifest.chunks[0].hash.hex()).write_bytes(b"rotten")
    trees = Trees(tmp_path / "trees")
    with pytest.raises(CorruptBlob):
        trees.build(built.dataset_id, built.manifest, store)
    assert not trees.has(built.dataset_id)
    assert list((tmp_path / "trees").iterdir()) == []


def test_sweep_deletes_partials_and_trees_not_held_whole(tmp_path: Path) -> None:
    built, store = added(tmp_path)
    trees = Trees(tmp_path / "trees")
    tree = trees.build(built.dataset_id, built.manifest, store)
    other = trees.path(b"\x01" * 32)
    link_into(tree, other)  # a tree whose dataset a crash removed before the tree went
    partial = tmp_path / "trees" / f".partial-{b'x'.hex()}"
    link_into(tree, partial)  # a tree a crash left half-written
    assert trees.sweep([built.dataset_id]) == sorted([other.name, partial.name])
    assert [p.name for p in (tmp_path / "trees").iterdir()] == [tree.name]
    assert trees.sweep([]) == [tree.name]
    assert Trees(tmp_path / "none").sweep([]) == []


def test_remove_frees_what_no_task_folder_still_links(tmp_path: Path) -> None:
    built, store = added(tmp_path)
    trees = Trees(tmp_path / "trees")
    tree = trees.build(built.dataset_id, built.manifest, store)
    task = tmp_path / "task" / "corpus"
    link_into(tree, task)
    os.unlink(task / "big.bin")  # only this file is free of the task's links
    assert trees.remove(built.dataset_id) == 300_000
    assert not trees.has(built.dataset_id)
    assert (task / "zeros.bin").read_bytes() == bytes(200_000)  # the task still reads its files
    assert trees.remove(built.dataset_id) == 0
    remove_tree(task)
    assert not task.exists()  # read-only folders in a task's folder go with it


def test_a_removal_cut_short_leaves_no_tree_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, store = added(tmp_path)
    trees = Trees(tmp_path / "trees")
    tree = trees.build(built.dataset_id, built.manifest, store)
    calls: list[Path] = []

    def cut_short(path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:  # the deletion itself: the node dies halfway
            (path / "big.bin").chmod(0o644)
            os.unlink(path / "big.bin")
            raise OSError("killed")

    monkeypatch.setattr("storage.dataset_trees.remove_tree", cut_short)
    with pytest.raises(OSError, match="killed"):
        trees.remove(built.dataset_id)
    monkeypatch.undo()
    assert not trees.has(built.dataset_id) and not tree.exists()
    assert trees.sweep([built.dataset_id]) == [f".removing-{built.dataset_id.hex()}"]


def test_linkable_says_whether_task_folders_share_the_trees_filesystem(tmp_path: Path) -> None:
    trees = Trees(tmp_path / "trees")
    assert trees.linkable(tmp_path / "work" / "not-made-yet")
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here")
    assert not trees.linkable(other / "task")  # tasks there get copies, counted as such
