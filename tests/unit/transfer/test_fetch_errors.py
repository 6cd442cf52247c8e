"""A task's data going wrong: an error from deep in a fetch's nurseries reaches the worker by
its type, not wrapped in exception groups (a full disk used to escape ``except OSError`` and
stop the worker); a task's folder goes whole even where its folders are read-only."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from node.transfer.fetcher import FetchFailed
from node.transfer.service import _flat_errors
from storage.transfer_files import remove_tree


async def raising(exc: BaseException) -> None:
    raise exc


def full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


async def test_disk_errors_come_out_of_their_groups() -> None:
    nested = ExceptionGroup("run", [ExceptionGroup("source", [full(), full()])])
    with pytest.raises(OSError, match="No space left") as info:
        await _flat_errors(raising(nested))  # type: ignore[arg-type]
    assert not isinstance(info.value, ExceptionGroup)


async def test_a_lone_error_comes_out_and_a_mixed_group_stays_one() -> None:
    with pytest.raises(FetchFailed):
        await _flat_errors(raising(ExceptionGroup("run", [FetchFailed("gone")])))  # type: ignore[arg-type]
    mixed = ExceptionGroup("run", [full(), ValueError("bug")])
    with pytest.raises(ExceptionGroup):
        await _flat_errors(raising(mixed))  # type: ignore[arg-type]


def test_a_tree_with_read_only_folders_is_removed(tmp_path: Path) -> None:
    locked = tmp_path / "task" / "data" / "inner"
    locked.mkdir(parents=True)
    (locked / "f").write_bytes(b"x")
    locked.chmod(0o500)
    locked.parent.chmod(0o500)
    remove_tree(tmp_path / "task")
    assert not (tmp_path / "task").exists()
