"""What a worker deletes at start: every task folder a stopped daemon left, and only those."""

from __future__ import annotations

import os
from pathlib import Path

from consensus.market.messages import TaskRef
from node.market.task_folders import empty_folder, sweep_task_folders, task_folder


def test_a_start_deletes_left_task_folders_and_nothing_else(tmp_path: Path) -> None:
    ref = TaskRef(job_id=bytes(range(16)), task=3, attempt=1)
    left = task_folder(tmp_path, ref)
    (left / "corpus").mkdir(parents=True)
    (left / "corpus" / "data.bin").write_bytes(b"x")
    os.chmod(left / "corpus", 0o555)  # a dataset's links sit in read-only folders
    checkpoints = tmp_path / f"{left.name}.checkpoints"
    checkpoints.mkdir()
    (tmp_path / f"{left.name}.out.tar").write_bytes(b"outputs being packed")
    for other in ("verify", "probes", "keys", f"{left.name}-not-a-task"):
        (tmp_path / other).mkdir()
    assert sweep_task_folders(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["verify", "probes", "keys", f"{left.name}-not-a-task"]
    )
    assert sweep_task_folders(tmp_path / "none") == 0


def test_a_scratch_folder_is_emptied(tmp_path: Path) -> None:
    (tmp_path / "seg-1" / "sub").mkdir(parents=True)
    (tmp_path / "probe-1.ckpt").write_bytes(b"state")
    (tmp_path / "link").symlink_to("/etc")
    assert empty_folder(tmp_path) == 3
    assert list(tmp_path.iterdir()) == [] and Path("/etc").is_dir()
