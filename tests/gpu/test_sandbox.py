"""Workloads in the sandbox: what they must not reach, and the limits that stop them.

Real bubblewrap, real child processes. Each hostile workload must be stopped and reported as a
failed run, and the next run on the same worker must still succeed.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from config.schema import WorkerSettings
from consensus.market.messages import Workload
from gpu.exec_runtime import ExecRuntime
from gpu.runtime import RunResult, RunSpec, SegmentDone, run_logged
from gpu.sandbox import (
    NOBODY,
    Limits,
    Sandbox,
    SandboxUnavailable,
    _give_tree,
    _hidden_from_others,
    shared_task_root,
)
from node.cli import cli
from node.market.packing import PackError, pack_outputs
from node.market.service import worker_sandbox
from storage.blobs import BlobStore
from storage.dataset_trees import Trees
from storage.transfer_files import build, link_into, remove_tree
from tests.gpu.conftest import SECRET, is_root, needs_bwrap, python_paths, sandbox

PY = "python3"


Outcome = tuple[RunResult, list[str], list[SegmentDone]]


async def run(box: Sandbox, workdir: Path, code: str, *, network: bool = False,
              outputs: tuple[str, ...] = (), tag: str = "") -> Outcome:  # fmt: skip
    logs: list[str] = []
    segments: list[SegmentDone] = []

    async def on_segment(done: SegmentDone) -> None:
        segments.append(done)

    workload = Workload(kind="exec", command=[PY, "-c", code], outputs=list(outputs),
                        network=network, params={"tag": tag})  # fmt: skip
    with trio.fail_after(60):
        result = await ExecRuntime(box).run(
            RunSpec("t", workload, workdir), on_segment, logs.append
        )
    return result, logs, segments


async def still_healthy(box: Sandbox, workdir: Path) -> None:
    """After a hostile run, the same sandbox runs an ordinary task."""
    result, logs, segments = await run(box, workdir, "open('ok.txt','w').write('fine')",
                                       outputs=("ok.txt",))  # fmt: skip
    assert result.ok, logs
    assert len(segments) == 1 and segments[0].hash == result.result_hash


@needs_bwrap
async def test_workload_cannot_read_the_node_key(node_home: Path, workdir: Path) -> None:
    key = node_home / "keys" / "node.key"
    code = f"import sys; sys.stdout.buffer.write(open({str(key)!r}, 'rb').read())"
    result, logs, _ = await run(sandbox(), workdir, code)
    assert not result.ok and result.error == "exit code 1"
    assert any("No such file or directory" in line for line in logs), logs
    assert not any(SECRET.decode() in line for line in logs)
    probe = f"import os; print(os.path.exists({str(node_home)!r}), os.getcwd(), os.getuid())"
    seen, logs, _ = await run(sandbox(), workdir, probe)
    assert seen.ok and logs[0].startswith("False /task "), logs
    if is_root():
        assert logs[0] == "False /task 65534", "a root daemon's workload runs as nobody"
    await still_healthy(sandbox(), workdir)


@needs_bwrap
async def test_workload_cannot_write_outside_its_directory(node_home: Path, workdir: Path) -> None:
    for target in [node_home / "planted", Path("/usr/planted"), Path("/etc/planted")]:
        result, _, _ = await run(sandbox(), workdir, f"open({str(target)!r}, 'w')")
        assert not result.ok, f"wrote {target}"
        assert not target.exists()
    result, _, _ = await run(sandbox(), workdir, "open('/tmp/scratch', 'w').write('x')")
    assert result.ok, "its own /tmp is writable (and private)"
    assert not Path("/tmp/scratch").exists()


@needs_bwrap
async def test_fork_bomb_is_stopped_and_reported(workdir: Path) -> None:
    if not is_root():
        pytest.skip("the uid running the test counts its own processes against the limit")
    bomb = "import os\nwhile True:\n    os.fork()"
    tag = os.urandom(8).hex()
    result, logs, _ = await run(sandbox(procs=32), workdir, bomb, tag=tag)
    assert not result.ok
    assert any("Resource temporarily unavailable" in line for line in logs), logs[-5:]
    assert not _tagged(tag), "processes of the bomb outlived its run"
    await still_healthy(sandbox(procs=32), workdir)


@needs_bwrap
async def test_unbounded_allocation_is_stopped(workdir: Path) -> None:
    hog = "x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))"
    result, logs, _ = await run(sandbox(memory_mb=512), workdir, hog)
    assert not result.ok
    assert any("MemoryError" in line for line in logs), logs[-5:]
    await still_healthy(sandbox(memory_mb=512), workdir)


@needs_bwrap
async def test_cpu_time_limit_kills(workdir: Path) -> None:
    result, _, _ = await run(sandbox(cpu_s=1), workdir, "while True: pass")
    assert not result.ok and "(killed by SIGKILL: a resource limit" in result.error, result.error


@needs_bwrap
async def test_network_only_when_the_job_asks(workdir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        closed, logs, _ = await run(sandbox(), workdir, code)
        assert not closed.ok and any("Connection refused" in line for line in logs), logs
        opened, logs, _ = await run(sandbox(), workdir, code, network=True)
        assert opened.ok, logs


@needs_bwrap
async def test_environment_is_clean(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDLEGRID_PASSPHRASE", "hunter2")
    result, logs, _ = await run(sandbox(), workdir, "import os; print(sorted(os.environ))")
    assert result.ok
    assert "IDLEGRID_PASSPHRASE" not in logs[0] and "CUDA_VISIBLE_DEVICES" in logs[0]


async def test_every_jail_has_the_same_machine_names(workdir: Path) -> None:
    """A job keyed on the machine's name would run one way on its worker and another on a
    sentry's, and get its honest worker slashed: the jail names no machine."""
    code = ("import socket; print(socket.gethostname(), repr(open('/etc/hostname').read()),"
            " repr(open('/etc/machine-id').read()))")  # fmt: skip
    result, logs, _ = await run(sandbox(), workdir, code)
    assert result.ok, logs
    assert logs[0] == "idlegrid '' ''", logs


def _bin_without_bwrap(tmp_path: Path) -> str:
    only = tmp_path / "bin"
    only.mkdir()
    for tool in ("prlimit", "true", "setpriv"):
        (only / tool).symlink_to(f"/usr/bin/{tool}")
    return str(only)


def test_missing_bwrap_is_a_clear_error_or_a_stated_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _bin_without_bwrap(tmp_path))
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed: install bubblewrap"):
        sandbox("bwrap")
    fallback = sandbox("auto")
    assert fallback.mode == "limits"
    assert fallback.describe().startswith("limits only (bwrap is not installed)")


def test_worker_does_not_start_without_its_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(tmp_path / "node")
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--home", home, "--role", "worker"]).exit_code == 0
    monkeypatch.setenv("PATH", _bin_without_bwrap(tmp_path))
    result = runner.invoke(cli, ["node", "start", "--home", home])
    assert result.exit_code == 1
    assert "worker.sandbox = bwrap but bwrap is not installed" in result.output


async def test_limits_mode_still_limits(workdir: Path) -> None:
    hog = "x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))"
    result, logs, _ = await run(sandbox("limits", memory_mb=512), workdir, hog)
    assert not result.ok and any("MemoryError" in line for line in logs)
    if is_root():  # the workload runs as nobody: root's 0600 key stays unreadable
        key = workdir.parents[1] / "keys" / "node.key"
        result, logs, _ = await run(sandbox("limits"), workdir, f"open({str(key)!r}).read()")
        assert not result.ok and any("Permission denied" in line for line in logs)


def _tagged(tag: str) -> list[str]:
    """Live processes whose environment carries ``tag`` (a zombie's environment is empty)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"IDLEGRID_PARAM_TAG={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


assert sys.platform.startswith("linux"), "the sandbox is Linux-only"


@needs_bwrap
@pytest.mark.parametrize("mode", ["bwrap", "limits"])
async def test_cancel_stops_a_workload_that_ignores_sigterm(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # the grace period run_logged reads, wherever the module lives
    monkeypatch.setitem(run_logged.__globals__, "KILL_GRACE_S", 0.5)
    tag = os.urandom(8).hex()
    stubborn = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('started', flush=True)\nwhile True: time.sleep(1)")  # fmt: skip
    workload = Workload(kind="exec", command=[PY, "-c", stubborn], params={"tag": tag})
    logs: list[str] = []
    started = trio.Event()

    def on_log(line: str) -> None:
        logs.append(line)
        if line == "started":
            started.set()

    async def on_segment(done: SegmentDone) -> None:
        raise AssertionError("a cancelled run reports no segment")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ExecRuntime(sandbox(mode)).run, RunSpec("t", workload, workdir),
                               on_segment, on_log)  # fmt: skip
            await started.wait()
            assert _tagged(tag)
            nursery.cancel_scope.cancel()
    assert not _tagged(tag), "the workload outlived its cancellation"
    await still_healthy(sandbox(mode), workdir)


@needs_bwrap
async def test_a_link_to_the_key_in_the_outputs_is_refused(
    node_home: Path, workdir: Path, tmp_path: Path
) -> None:
    """The node reads outputs as itself: a link planted by the workload must not be followed."""
    key = node_home / "keys" / "node.key"
    code = f"import os; os.makedirs('out'); os.symlink({str(key)!r}, 'out/key')"
    result, _, segments = await run(sandbox(), workdir, code, outputs=("out/",))
    assert not result.ok and segments == []
    assert result.error == "unsafe output: out/key: out/key is a symbolic link"
    with pytest.raises(PackError, match="out/key: a symbolic link, not packed"):
        pack_outputs(workdir, ["out/"], tmp_path / "out.tar")


@needs_bwrap
async def test_a_run_outlives_the_thread_that_started_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trio starts processes from worker threads that retire after IDLE_TIMEOUT; nothing tied
    to that thread (bwrap's --die-with-parent is) may end the run."""
    from trio._core import _thread_cache  # noqa: PLC0415

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    result, logs, _ = await run(sandbox(), workdir, "import time; time.sleep(1.5); print('done')")
    assert result.ok, (result.error, logs)
    assert logs == ["done"]


@needs_bwrap
async def test_a_readable_path_under_tmp_is_not_hidden_by_the_private_tmp(
    tmp_path: Path, workdir: Path
) -> None:
    # A checkout (and its .venv) under /tmp must stay readable: CI may clone there.
    shared = tmp_path / "env"
    shared.mkdir()
    (shared / "lib.txt").write_text("from the environment")
    (shared.parent / "beside.txt").write_text("not shared")
    box = Sandbox.create("bwrap", Limits(), readonly=(*python_paths(), shared))
    code = (f"print(open('{shared}/lib.txt').read()); import os; "
            f"print(os.path.exists('{shared.parent}/beside.txt'))")  # fmt: skip
    result, logs, _ = await run(box, workdir, code)
    assert result.ok, logs
    assert logs == ["from the environment", "False"]


async def test_a_root_worker_with_limits_only_runs_its_tasks_outside_its_private_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workloads as nobody in a private home failed every task that opens its own script
    ("can't open file ... Permission denied", exit code 2): their folders now live outside it.
    """
    if not is_root():
        pytest.skip("as another user, workloads run as our own uid, which reaches its home")
    with tempfile.TemporaryDirectory() as tmp:  # pytest's own tmp root is private
        base = Path(tmp)
        base.chmod(0o755)
        monkeypatch.setenv("PATH", _bin_without_bwrap(base))  # where nobody can run prlimit
        work = base / "home" / "work"
        work.mkdir(parents=True)
        (base / "home").chmod(0o700)  # as /root/.idlegrid is
        box = worker_sandbox(WorkerSettings(sandbox="auto"), work)
        tasks = box.task_root(work)
        assert box.mode == "limits" and not tasks.is_relative_to(base)
        assert box.unreachable(tasks) is None and box.task_root(work) == tasks
        workdir = tasks / "job-0-0"
        workdir.mkdir()
        (workdir / "work.py").write_text("open('out.txt', 'w').write('ran')")
        workload = Workload(kind="exec", command=[PY, "work.py"], outputs=["out.txt"])
        logs: list[str] = []
        with trio.fail_after(60):
            result = await ExecRuntime(box).run(
                RunSpec("t", workload, workdir), _ignore, logs.append
            )
        assert result.ok, "\n".join(logs)
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700  # nobody's, and no one else's
        shutil.rmtree(tasks)


async def _ignore(_: SegmentDone) -> None:
    pass


def test_the_shared_task_root_is_ours_or_refused(tmp_path: Path) -> None:
    private = tmp_path / "work"
    root = shared_task_root(private, base=tmp_path)
    assert root.parent == tmp_path and shared_task_root(private, base=tmp_path) == root
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert shared_task_root(tmp_path / "other", base=tmp_path) != root  # one per node
    root.rmdir()
    root.symlink_to(tmp_path)  # made first by someone else, pointing where they like
    with pytest.raises(SandboxUnavailable, match="is not a directory of this user: remove it"):
        shared_task_root(private, base=tmp_path)
    if is_root():
        root.unlink()
        root.mkdir()
        os.chown(root, 65534, 65534)
        with pytest.raises(SandboxUnavailable, match=str(root)):
            shared_task_root(private, base=tmp_path)


def test_limits_as_root_names_a_directory_its_workloads_cannot_enter() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # pytest's own tmp root is private
        base = Path(tmp)
        base.chmod(0o755)
        env = base / "private" / "venv"
        env.mkdir(parents=True)
        (base / "private").chmod(0o700)  # as /root is
        assert _hidden_from_others((env,)) == base / "private"
        jailed, limited = Sandbox("bwrap", readonly=(env,)), Sandbox("limits", readonly=(env,))
        assert jailed.unreadable() is None  # bwrap opens the way itself
        assert limited.unreadable() == (base / "private" if is_root() else None)
        (base / "private").chmod(0o755)
        assert _hidden_from_others((env,)) is None


TOUCH_DATASET = """
import os
path = 'corpus/sub/data.bin'
print('read', open(path, 'rb').read())
for what, act in [('write', lambda: open(path, 'r+b')), ('chmod', lambda: os.chmod(path, 0o666)),
                  ('unlink', lambda: os.unlink(path)), ('add', lambda: open('corpus/new', 'w'))]:
    try:
        act()
        print(what, 'done')
    except OSError as exc:
        print(what, 'refused')
open('out.txt', 'w').write('mine')
"""


def _shared_dataset(base: Path, workdir: Path) -> Path:
    """A dataset's read-only copy under ``base`` (as the node writes it), and the task's
    folder ``corpus`` of links to it; returns the copy's file."""
    built_src = base / "src"
    (built_src / "sub").mkdir(parents=True)
    (built_src / "sub" / "data.bin").write_bytes(b"shared")
    store = BlobStore(base / "store")
    built = build(built_src, store)
    tree = Trees(base / "trees").build(built.dataset_id, built.manifest, store)
    link_into(tree, workdir / "corpus")
    return tree / "sub" / "data.bin"


async def _touch_dataset(box: Sandbox, workdir: Path, shared: Path) -> list[str]:
    workload = Workload(kind="exec", command=[PY, "-c", TOUCH_DATASET], outputs=["out.txt"],
                        datasets={"corpus": b"\x01" * 32})  # fmt: skip
    logs: list[str] = []
    with trio.fail_after(60):
        result = await ExecRuntime(box).run(RunSpec("t", workload, workdir), _ignore, logs.append)
    assert result.ok, "\n".join(logs)
    assert (workdir / "out.txt").read_text() == "mine"  # its own folder is its own
    assert shared.read_bytes() == b"shared" and stat.S_IMODE(shared.stat().st_mode) == 0o444
    assert shared.stat().st_uid == os.geteuid(), "the shared copy stays the node's"
    return logs


@needs_bwrap
async def test_a_workload_reads_a_shared_dataset_and_cannot_change_it(
    node_home: Path, workdir: Path
) -> None:
    """Tasks link to one copy of each dataset (storage.dataset_trees): one that changed its
    files would change every later task's data. bwrap binds the folder read-only."""
    shared = _shared_dataset(node_home, workdir)
    logs = await _touch_dataset(sandbox(), workdir, shared)
    assert logs == ["read b'shared'", "write refused", "chmod refused", "unlink refused",
                    "add refused"]  # fmt: skip


async def test_limits_as_root_keeps_a_shared_dataset_from_its_workloads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without bwrap, a root node's workloads run as nobody: the shared copy is not given to
    them with their folder, so they can read it and not change it."""
    if not is_root():
        pytest.skip("as another user, limits mode runs workloads as our own uid")
    with tempfile.TemporaryDirectory() as tmp:  # reachable by nobody, unlike pytest's
        base = Path(tmp)
        base.chmod(0o755)
        workdir = base / "task"
        workdir.mkdir()
        shared = _shared_dataset(base, workdir)
        logs = await _touch_dataset(sandbox("limits"), workdir, shared)
        assert logs == ["read b'shared'", "write refused", "chmod refused", "unlink refused",
                        "add refused"]  # fmt: skip
        remove_tree(workdir)


def test_a_root_node_never_hands_a_shared_file_to_the_workload(tmp_path: Path) -> None:
    """Another task's workload (the same uid in limits mode) may rename a task's dataset
    folder before the node gives the task folder over: the shared copy's files, being hard
    links, are still not given, and the folder is the node's alone until the end."""
    if not is_root():
        pytest.skip("only a root node gives task folders to another uid")
    workdir = tmp_path / "task"
    workdir.mkdir()
    shared = _shared_dataset(tmp_path, workdir)
    (workdir / "corpus").rename(workdir / "renamed")  # as a racing workload would
    (workdir / "mine.txt").write_text("an input")
    _give_tree(workdir, NOBODY, frozenset({"corpus"}))
    assert shared.stat().st_uid == 0 and (workdir / "renamed" / "sub" / "data.bin").exists()
    assert (workdir / "mine.txt").stat().st_uid == NOBODY
    assert workdir.stat().st_uid == NOBODY and stat.S_IMODE(workdir.stat().st_mode) == 0o700
