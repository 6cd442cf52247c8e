"""Where a worker runs each task: one folder per attempt under its task root, scratch that
no restart needs.

A task in flight when the daemon stops is reported lost at the next start (its result, if
any, is in the blob store), so whatever its folder held is of no use: outputs, checkpoints
and links to a dataset's shared copy, which would keep a deleted dataset's bytes on disk.
A kill -9 left those folders behind for good; now the worker deletes them when it starts,
and the sentry and the probe answerer empty their scratch folders the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from consensus.market.messages import JOB_ID_LEN, TaskRef
from storage.transfer_files import remove_tree

_TASK_FOLDER = re.compile(rf"[0-9a-f]{{{2 * JOB_ID_LEN}}}-\d+-\d+(\.checkpoints|\.out\.tar)?")


def task_folder(root: Path, ref: TaskRef) -> Path:
    """The folder of one attempt at a task (its checkpoints go beside it, see the runtime)."""
    return root / f"{ref.job_id.hex()}-{ref.task}-{ref.attempt}"


def sweep_task_folders(root: Path) -> int:
    """Deletes every task folder under ``root``, with its checkpoints and output archive
    (only those: a sentry's scratch lives there too); returns how many. Call before any task
    starts."""
    return _delete_in(root, lambda name: _TASK_FOLDER.fullmatch(name) is not None)


def empty_folder(root: Path) -> int:
    """Deletes everything in ``root`` (a scratch folder nobody uses yet); returns how much."""
    return _delete_in(root, lambda _name: True)


def _delete_in(root: Path, wanted: Callable[[str], bool]) -> int:
    """Deletes the entries of ``root`` whose name is ``wanted`` (a link, not what it names)."""
    entries = [p for p in root.iterdir() if wanted(p.name)] if root.is_dir() else []
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)
        else:
            path.unlink()
    return len(entries)
