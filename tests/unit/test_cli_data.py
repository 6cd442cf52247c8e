"""``idlegrid data``: add and status on a real data dir; bad input exits 2 naming the argument."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from node.cli import cli
from node.transfer import local
from storage import dataset_cache as cache
from storage.db import open_sync, run_transaction
from storage.transfer_files import materialize


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["data", *args])
    return result.exit_code, result.output


def run_split(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["data", *args])
    return result.exit_code, result.stdout, result.stderr


def test_add_then_status(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("hello\n" * 100)
    home = str(tmp_path / "home")
    code, out = run("add", str(tmp_path / "d"), "--home", home, "--json")
    assert code == 0, out
    added = json.loads(out)
    assert (added["files"], added["chunks"], added["bytes"]) == (1, 1, 600)
    code, out, err = run_split("add", str(tmp_path / "d"), "--home", home)  # same content
    assert out.strip() == added["dataset_id"]  # same id; stdout is the id alone, for scripts
    assert "is not a node's data dir" in err and "no daemon serves" in err, err
    code, out = run("status", "--home", home, "--json")
    (row,) = json.loads(out)
    assert (row["dataset_id"], row["state"], row["bytes_have"]) == (
        added["dataset_id"], "complete", 600,
    )  # fmt: skip
    code, out = run("status", "--home", home)
    assert "100%" in out and "complete" in out and "added" in out
    assert row["for_tasks_used_ms"] is None  # the operator's: never evicted


def test_a_dataset_fetched_for_tasks_shows_as_such(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("hello\n")
    home = tmp_path / "home"
    code, out = run("add", str(tmp_path / "d"), "--home", str(home), "--json")
    dataset_id = bytes.fromhex(json.loads(out)["dataset_id"])
    conn = open_sync(home / "node.db")
    try:
        run_transaction(conn, lambda c: cache.use(c, dataset_id, 1234))
        run_transaction(conn, lambda c: cache.touch(c, [dataset_id], 1000))  # never goes back
    finally:
        conn.close()
    (row,) = json.loads(run("status", "--home", str(home), "--json")[1])
    assert row["for_tasks_used_ms"] == 1234
    assert "for tasks" in run("status", "--home", str(home))[1]
    run("add", str(tmp_path / "d"), "--home", str(home), "--json")  # the operator wants it now
    (row,) = json.loads(run("status", "--home", str(home), "--json")[1])
    assert row["for_tasks_used_ms"] is None
    conn = open_sync(home / "node.db")
    try:
        run_transaction(conn, lambda c: cache.use(c, dataset_id, 1234))
    finally:
        conn.close()
    code, out = run("rm", dataset_id.hex(), "--home", str(home), "--json")
    assert code == 0, out
    conn = open_sync(home / "node.db")
    try:
        assert cache.cached(conn) == {}  # went with its transfer row
    finally:
        conn.close()


def test_bad_input_exits_2(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    code, out = run("add", str(tmp_path / "d"), "--home", home)
    assert code == 2 and "PATH" in out and "link" in out
    code, out = run("get", "nothex", "--out", str(tmp_path / "o"), "--from", "x", "--home", home)
    assert code == 2 and "ID" in out
    code, out = run("status", "ab" * 31, "--home", home)
    assert code == 2 and "ID" in out
    code, out = run("status", "ab" * 32, "--home", home)
    assert code == 2 and "no dataset abababababababab here" in out
    code, out = run("status", "--home", str(tmp_path / "typo"))
    assert code == 2 and "typo does not exist" in out
    assert not (tmp_path / "typo").exists()
    code, out = run("grant", "ab" * 32, "12D3KooWnotreally", "--home", home)
    assert code == 2 and "not a node's peer id" in out
    code, out = run("grant", "ab" * 32, "*", "--home", home)  # no daemon: checked here too
    assert code == 2 and "abababababababab is not held whole here" in out
    code, out = run(
        "get", "ab" * 32, "--out", str(tmp_path / "o"), "--from", "nope", "--home", home
    )
    assert code == 2 and "--from" in out


def test_rm_frees_what_no_other_dataset_uses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shared = random.Random(1).randbytes(2 << 20)  # two 1 MiB chunks, both datasets hold them
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shared.bin").write_bytes(shared)
    (tmp_path / "b" / "own.bin").write_bytes(random.Random(2).randbytes(3_000_000))
    ids = {n: json.loads(run("add", str(tmp_path / n), "--home", str(home), "--json")[1])
           ["dataset_id"] for n in ("a", "b")}  # fmt: skip
    code, out = run("rm", ids["b"][:3], "--home", str(home))
    assert code == 2 and "not a dataset id" in out  # too short to be a prefix
    code, out = run("rm", ids["b"][:16], "--home", str(home), "--json")  # as tables show it
    assert code == 0, out
    removed = json.loads(out)
    assert removed["chunks_kept"] == 2, "a still uses the shared file's two chunks"
    assert removed["chunks_deleted"] == 3 and removed["bytes_freed"] >= 3_000_000
    code, out = run("status", "--home", str(home), "--json")
    assert [r["dataset_id"] for r in json.loads(out)] == [ids["a"]]
    store = local.chunk_store(home)
    [(_, manifest)] = local.complete_datasets(home / "node.db", store).items()
    materialize(manifest, store, tmp_path / "a-again")  # every chunk of a is still here
    assert (tmp_path / "a-again" / "shared.bin").read_bytes() == shared
    code, out = run("rm", ids["b"], "--home", str(home))
    assert code == 2 and "no dataset" in out


def test_status_shows_the_copy_written_for_tasks_and_rm_deletes_it(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("hello\n" * 100)
    home = tmp_path / "home"
    code, out = run("add", str(tmp_path / "d"), "--home", str(home), "--json")
    dataset_id = bytes.fromhex(json.loads(out)["dataset_id"])
    store, trees = local.chunk_store(home), local.trees(home)
    manifest = local.complete_datasets(home / "node.db", store)[dataset_id]
    trees.build(dataset_id, manifest, store)  # as a task on it would
    (row,) = json.loads(run("status", "--home", str(home), "--json")[1])
    assert row["written_out"] is True
    assert run("status", "--home", str(home))[1].splitlines()[1].rstrip().endswith("yes")
    code, out = run("rm", dataset_id.hex(), "--home", str(home), "--json")  # no daemon
    assert code == 0, out
    assert json.loads(out)["bytes_freed"] > 600  # its chunk, and its copy of 600 B
    assert not trees.has(dataset_id)
