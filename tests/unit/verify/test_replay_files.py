"""Each replay of a check gets the task's inputs afresh and its datasets as the dataset
service places them (links to the node's one read-only copy, see tests/storage and the
dataset job test)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from node.market.packing import pack
from node.verify.task_files import ReplayFiles
from storage.transfer_files import link_into


class FakeDatasets:
    """Places a dataset as links to one copy, as the transfer service does."""

    def __init__(self, copy: Path) -> None:
        self.copy, self.placed = copy, 0

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        self.placed += 1
        if not self.copy.exists():
            (self.copy / "shard").mkdir(parents=True)
            (self.copy / "shard" / "0.bin").write_bytes(dataset_id * 1000)
        link_into(self.copy, out)


class FakeShare:
    def __init__(self, archive: Path, copy: Path) -> None:
        self.archive, self.datasets = archive, FakeDatasets(copy)

    async def fetch(self, ref: Any, addrs: Any) -> Path:
        return self.archive


def attestation() -> Any:
    workload = SimpleNamespace(datasets={"data": b"D"})
    ref = SimpleNamespace(text=lambda: "job/0#0")
    return SimpleNamespace(workload=workload, inputs=object(), listen=[], ref=ref)


def replay_files(tmp_path: Path, inputs: dict[str, str]) -> tuple[ReplayFiles, FakeShare]:
    """ReplayFiles for a task with these input files and one dataset, ``data``."""
    source = tmp_path / "src"
    for name, text in inputs.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    pack(source, list(inputs), tmp_path / "inputs.tar")
    share = FakeShare(tmp_path / "inputs.tar", tmp_path / "trees" / "D")
    return ReplayFiles(share, attestation(), tmp_path / "check", []), share  # type: ignore[arg-type]


async def test_inputs_are_unpacked_afresh_and_datasets_placed_for_each_replay(
    tmp_path: Path,
) -> None:
    files, share = replay_files(tmp_path, {"train.py": "print('hi')\n"})
    first, second = files.work / "seg-1", files.work / "seg-2"
    assert await files.put(first)
    (first / "train.py").write_text("overwritten by the workload\n")
    (first / "scratch.txt").write_text("left by the workload\n")
    assert await files.put(second)
    assert await files.put(first)
    assert share.datasets.placed == 3
    assert (first / "train.py").read_text() == "print('hi')\n"  # inputs: a fresh copy
    assert not (first / "scratch.txt").exists()  # the folder was emptied first
    one, two = first / "data" / "shard" / "0.bin", second / "data" / "shard" / "0.bin"
    assert two.read_bytes() == b"D" * 1000
    assert os.stat(one).st_ino == os.stat(two).st_ino  # the dataset: linked, not written


def test_link_into_merges_keeps_modes_and_links_and_replaces_same_names(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_bytes(b"x")
    (source / "link").symlink_to("sub/f")
    os.chmod(source / "sub", 0o500)
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "f").write_bytes(b"the input's")
    (target / "sub" / "mine").write_bytes(b"kept")
    link_into(source, target)
    assert sorted(p.name for p in target.iterdir()) == ["link", "sub"]
    assert (target / "link").is_symlink() and (target / "link").read_bytes() == b"x"
    assert os.stat(target / "sub").st_mode & 0o777 == 0o500
    assert os.stat(target / "sub" / "f").st_ino == os.stat(source / "sub" / "f").st_ino
    assert (target / "sub" / "mine").read_bytes() == b"kept"
    os.chmod(source / "sub", 0o700)
    os.chmod(target / "sub", 0o700)
