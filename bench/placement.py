"""Putting a task's dataset in its folder: written out per task (before) against hard links to
the node's one read-only copy (now), next to a plain copy of the same files, in one run.

Run: ``.venv/bin/python bench/placement.py [--mib 512] [--tasks 5]``

A folder of big random files and many small ones is chunked into a real blob store
(:func:`storage.transfer_files.build`), as a worker holds a fetched dataset. Then, for each of
``--tasks`` task folders:

- *written*: :func:`storage.transfer_files.materialize` out of the store (every chunk read and
  hash-checked, every file written), what each task cost before;
- *linked*: :func:`storage.transfer_files.link_into` from the tree that
  :meth:`storage.dataset_trees.Trees.build` wrote once (timed on its own: the first task's
  extra cost).

The baseline is ``shutil.copytree`` of the source folder into a fresh folder: the plain way to
give a task its own copy. Neither side syncs the task folders (the page cache takes the
writes), so on a slow disk *written* is flattered. Ends with
``RESULT linked_ms=... written_ms=... copy_ms=... tree_ms=... speedup=... tasks_s_written=...
tasks_s_linked=...`` (per task, ms; ``speedup``: written over linked; ``tasks_s_*``: every
task's placement together, the tree's one write included on the linked side).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from storage.blobs import BlobStore
from storage.dataset_trees import Trees
from storage.transfer_files import build, link_into, materialize, remove_tree


def make_dataset(root: Path, size: int) -> None:
    """``size`` bytes: a quarter in small files (4 to 64 KiB), the rest in 16 MiB files."""
    (root / "small").mkdir(parents=True)
    small_total, i = size // 4, 0
    while small_total > 0:
        n = min(small_total, 4096 + (i * 7919) % (60 << 10))
        (root / "small" / f"{i:05}.bin").write_bytes(os.urandom(n))
        small_total, i = small_total - n, i + 1
    big, j = size - size // 4, 0
    while big > 0:
        n = min(big, 16 << 20)
        (root / f"big{j:03}.bin").write_bytes(os.urandom(n))
        big, j = big - n, j + 1


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def main(size: int, tasks: int) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        base = Path(tmp)
        make_dataset(base / "src", size)
        store = BlobStore(base / "store")
        built = build(base / "src", store)
        files = len(built.manifest.files)
        copy = [timed(shutil.copytree, base / "src", base / f"copy{t}") for t in range(tasks)]
        written = [
            timed(materialize, built.manifest, store, base / f"written{t}") for t in range(tasks)
        ]
        trees = Trees(base / "trees")
        tree_ms = timed(trees.build, built.dataset_id, built.manifest, store)
        tree = trees.path(built.dataset_id)
        linked = [timed(link_into, tree, base / f"linked{t}" / "corpus") for t in range(tasks)]
        for path in base.iterdir():
            remove_tree(path)
    med = {name: sorted(v)[len(v) // 2] for name, v in
           (("copy", copy), ("written", written), ("linked", linked))}  # fmt: skip
    print(f"dataset: {size >> 20} MiB in {files} files, {tasks} tasks")
    print(f"{'per task':<28}{'median ms':>12}")
    print(f"{'copytree (baseline)':<28}{med['copy']:>12.1f}")
    print(f"{'written out (before)':<28}{med['written']:>12.1f}")
    print(f"{'linked (now)':<28}{med['linked']:>12.1f}")
    print(f"{'the tree, once':<28}{tree_ms:>12.1f}")
    all_written, all_linked = sum(written) / 1000, (tree_ms + sum(linked)) / 1000
    print(
        f"RESULT linked_ms={med['linked']:.1f} written_ms={med['written']:.1f} "
        f"copy_ms={med['copy']:.1f} tree_ms={tree_ms:.1f} "
        f"speedup={med['written'] / med['linked']:.1f} "
        f"tasks_s_written={all_written:.2f} tasks_s_linked={all_linked:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="dataset size (default 512)")
    parser.add_argument("--tasks", type=int, default=5, help="task folders (default 5)")
    args = parser.parse_args()
    main(args.mib << 20, args.tasks)
