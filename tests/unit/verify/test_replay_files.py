"""A check's replays share one written-out copy of the task's datasets (hard links), while
each gets its inputs afresh; a replay that changed a dataset file does not pass it on."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from node.market.packing import pack
from node.verify.task_files import ReplayFiles
from storage.transfer_files import link_into


class FakeDatasets:
    """Writes a dataset as the transfer service would, counting how often."""

    def __init__(self) -> None:
        self.placed = 0

    async def place(self, dataset_id: bytes, out: Path, holders: list[str]) -> None:
        self.placed += 1
        (out / "shard").mkdir(parents=True)
        (out / "shard" / "0.bin").write_bytes(dataset_id * 1000)
        # Written long before a replay writes into it (mtimes are coarse: a jiffy or more).
        os.utime(out / "shard" / "0.bin", ns=(10**18, 10**18))


class FakeShare:
    def __init__(self, archive: Path) -> None:
        self.archive, self.datasets = archive, FakeDatasets()

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
    share = FakeShare(tmp_path / "inputs.tar")
    base = tmp_path / "check" / "base"
    return ReplayFiles(share, attestation(), base, []), share  # type: ignore[arg-type]


async def test_datasets_are_written_once_and_inputs_each_time(tmp_path: Path) -> None:
    files, share = replay_files(tmp_path, {"train.py": "print('hi')\n"})
    first, second = tmp_path / "check" / "seg-1", tmp_path / "check" / "seg-2"
    assert await files.put(first)
    (first / "train.py").write_text("overwritten by the workload\n")
    assert await files.put(second)
    assert share.datasets.placed == 1 and files.placed == 1
    assert (second / "train.py").read_text() == "print('hi')\n"  # inputs: a fresh copy
    one, two = first / "data" / "shard" / "0.bin", second / "data" / "shard" / "0.bin"
    assert two.read_bytes() == b"D" * 1000
    assert os.stat(one).st_ino == os.stat(two).st_ino  # the dataset: linked, not written
    assert os.stat(files.base).st_mode & 0o777 == 0o700  # a requester's data


async def test_a_replay_that_writes_into_a_dataset_file_does_not_pass_it_on(
    tmp_path: Path,
) -> None:
    files, share = replay_files(tmp_path, {"train.py": ""})
    first, second = tmp_path / "check" / "seg-1", tmp_path / "check" / "seg-2"
    assert await files.put(first)
    with (first / "data" / "shard" / "0.bin").open("r+b") as f:  # as a memmap "r+" would
        f.write(b"normalised")
    assert await files.put(second)
    assert (second / "data" / "shard" / "0.bin").read_bytes() == b"D" * 1000
    assert share.datasets.placed == 2  # written out again
    os.chmod(second / "data" / "shard" / "0.bin", 0o400)
    assert await files.put(first)
    assert os.stat(first / "data" / "shard" / "0.bin").st_mode & 0o777 != 0o400
    assert share.datasets.placed == 3


async def test_inputs_inside_a_dataset_folder_stay_as_the_worker_had_them(
    tmp_path: Path,
) -> None:
    files, _share = replay_files(tmp_path, {"data/config.json": "{}"})
    for seg in ("seg-1", "seg-2"):
        workdir = tmp_path / "check" / seg
        assert await files.put(workdir)
        assert (workdir / "data" / "config.json").read_text() == "{}"
        assert (workdir / "data" / "shard" / "0.bin").read_bytes() == b"D" * 1000


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
