"""A check's replays share one written-out copy of the task's datasets (hard links), while
each gets its inputs afresh."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from node.market.packing import pack
from node.verify.task_files import ReplayFiles
from storage.transfer_files import link_tree


class FakeDatasets:
    """Writes a dataset as the transfer service would, counting how often."""

    def __init__(self) -> None:
        self.placed = 0

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        self.placed += 1
        (out / "shard").mkdir(parents=True)
        (out / "shard" / "0.bin").write_bytes(dataset_id * 1000)


class FakeShare:
    def __init__(self, archive: Path) -> None:
        self.archive, self.datasets = archive, FakeDatasets()

    async def fetch(self, ref: Any, addrs: Any) -> Path:
        return self.archive


def attestation() -> Any:
    workload = SimpleNamespace(datasets={"data": b"D"})
    ref = SimpleNamespace(text=lambda: "job/0#0")
    return SimpleNamespace(workload=workload, inputs=object(), listen=[], ref=ref)


async def test_datasets_are_written_once_and_inputs_each_time(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('hi')\n")
    pack(source, ["train.py"], tmp_path / "inputs.tar")
    share = FakeShare(tmp_path / "inputs.tar")
    files = ReplayFiles(share, attestation(), tmp_path / "check" / "base", [])  # type: ignore[arg-type]
    first, second = tmp_path / "check" / "seg-1", tmp_path / "check" / "seg-2"
    assert await files.put(first)
    (first / "train.py").write_text("overwritten by the workload\n")
    assert await files.put(second)
    assert share.datasets.placed == 1 and files.placed == 1
    assert (second / "train.py").read_text() == "print('hi')\n"  # inputs: a fresh copy
    one, two = first / "data" / "shard" / "0.bin", second / "data" / "shard" / "0.bin"
    assert two.read_bytes() == b"D" * 1000
    assert os.stat(one).st_ino == os.stat(two).st_ino  # the dataset: linked, not written


def test_link_tree_keeps_modes_and_links_and_empties_the_target(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_bytes(b"x")
    (source / "link").symlink_to("sub/f")
    os.chmod(source / "sub", 0o500)
    (target / "stale").mkdir(parents=True)
    link_tree(source, target)
    assert sorted(p.name for p in target.iterdir()) == ["link", "sub"]
    assert (target / "link").is_symlink() and (target / "link").read_bytes() == b"x"
    assert os.stat(target / "sub").st_mode & 0o777 == 0o500
    assert os.stat(target / "sub" / "f").st_ino == os.stat(source / "sub" / "f").st_ino
    os.chmod(source / "sub", 0o700)
    os.chmod(target / "sub", 0o700)
