"""Where workloads run: bubblewrap jails with resource limits, away from the node's data and keys.

In ``bwrap`` mode a workload sees a fresh root: the system directories (``/usr``, ``/etc``) and
the paths it needs (the Python environment, the runtime's own files) read-only, its task
directory read-write at ``/task``, a private ``/tmp``, ``/proc`` and a minimal ``/dev`` (plus the
GPUs it was given), and nothing else: not the node's data dir, not its keys. It has its own
user, PID, IPC, UTS and network namespaces, so no network (only its own loopback) unless the job
asked for it and the owner allows it. ``prlimit`` inside the jail caps address space, CPU
seconds, file size, processes and open files.

A daemon running as root builds the jail as root (so the task directory may sit in its 0700
data dir) and drops the workload to an unprivileged uid (:data:`NOBODY`) inside it with
``setpriv``: root ignores the process limit, and that uid could not read root's 0600 key files
even if they were visible. A daemon running as a user jails through a user namespace; the
process limit then counts only the jail's processes.

``limits`` mode (no bubblewrap) keeps the limits, the clean environment, the own directory and
the uid drop, but the workload sees the filesystem as that uid does and has the network: the
node says so wherever it reports the sandbox. As root its task folders then live outside the
0700 data dir (:meth:`Sandbox.task_root`), which the workload's uid could not enter.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("bwrap", "auto", "limits")  # as config.schema.SANDBOX_MODES
NOBODY = 65534
TASK_DIR = "/task"
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32")
# Files that name the machine, emptied in the jail (with the host name set to JAIL_HOSTNAME):
# a job script keyed on them would run one way on its worker and another on a sentry's, and
# a bitwise miss is slashable.
MACHINE_NAMES = ("/etc/hostname", "/etc/machine-id")  # under a bound SYSTEM_DIRS entry
JAIL_HOSTNAME = "idlegrid"
_UNSHARE = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
NVIDIA_SHARED = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
SHARED_BASE = Path("/var/tmp")  # noqa: S108 - see shared_task_root: ours, checked, 0711


class SandboxUnavailable(Exception):
    """The configured sandbox cannot run here; the message says what to install or set."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 8192
    cpu_s: int = 86_400
    file_mb: int = 10_240
    procs: int = 256
    open_files: int = 1024

    def prlimit_args(self) -> list[str]:
        return [
            f"--as={self.memory_mb * 2**20}",
            f"--cpu={self.cpu_s}",
            f"--fsize={self.file_mb * 2**20}",
            f"--nproc={self.procs}",
            f"--nofile={self.open_files}",
            "--core=0",
        ]


@dataclass(frozen=True)
class Jail:
    """One prepared run: the argv, its environment, and extra ``Popen`` options."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    popen: dict[str, Any] = field(default_factory=dict)
    task_dir: str = TASK_DIR  # where the workload sees its directory


@dataclass(frozen=True)
class Sandbox:
    """How this worker jails workloads. Build with :meth:`create`."""

    mode: str  # "bwrap" or "limits", resolved
    limits: Limits = field(default_factory=Limits)
    readonly: tuple[Path, ...] = ()  # extra paths every workload may read
    reason: str = ""  # why limits only, when that is what we have
    bwrap: str = "bwrap"
    prlimit: str = "prlimit"
    setpriv: str = "setpriv"

    @classmethod
    def create(cls, setting: str, limits: Limits, readonly: tuple[Path, ...] = ()) -> Sandbox:
        """Resolves ``worker.sandbox`` (bwrap | limits | auto) on this machine.

        Raises:
            SandboxUnavailable: bwrap is required but missing or broken, or prlimit is missing.
        """
        prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
        if prlimit is None or setpriv is None:
            raise SandboxUnavailable("prlimit and setpriv (util-linux) are needed for limits")
        bwrap = shutil.which("bwrap")
        ro = tuple(sorted({p.resolve() for p in readonly}))
        if setting == "limits":
            return cls("limits", limits, ro, "worker.sandbox = limits", prlimit=prlimit)
        problem = "bwrap is not installed" if bwrap is None else _probe(bwrap)
        if problem is None:
            assert bwrap is not None
            return cls("bwrap", limits, ro, bwrap=bwrap, prlimit=prlimit, setpriv=setpriv)
        if setting == "auto":
            return cls("limits", limits, ro, problem, prlimit=prlimit)
        raise SandboxUnavailable(
            f"worker.sandbox = bwrap but {problem}: install bubblewrap (apt-get install "
            "bubblewrap), or set worker.sandbox = limits to run workloads with resource limits "
            "only (they can then read what their uid can and reach the network)"
        )

    def unreachable(self, work_root: Path) -> Path | None:
        """A directory on the way to the task folders under ``work_root`` that workloads cannot
        enter, which would fail every task that opens its own files by path.

        Only limits mode as root has one: the workload runs as :data:`NOBODY`, and a node's
        home is private (0700). Python opens a script by its absolute path, so ``python3
        train.py`` in the task folder fails ("can't open file ... Permission denied", exit 2).
        """
        if self.mode != "limits" or os.geteuid() != 0:
            return None
        return _hidden_from_others((work_root,))

    def task_root(self, private: Path) -> Path:
        """Where task folders go: ``private`` (the node's work directory) when workloads can
        reach it, else :func:`shared_task_root` (limits only, as root: workloads run as
        nobody, who cannot pass the node's 0700 home).

        Raises:
            SandboxUnavailable: the shared directory is not ours (see there).
        """
        return private if self.unreachable(private) is None else shared_task_root(private)

    def unreadable(self) -> Path | None:
        """A directory on the way to the read-only paths that workloads cannot enter.

        Only limits mode as root has one: the workload drops to :data:`NOBODY`, which cannot
        start a Python living under a private home (``/root/.pyenv``), so runtimes that need
        this environment's Python (train, render) would fail every task with exit code 126.
        bwrap mode opens the way itself (see ``_bwrap_args``).
        """
        if self.mode != "limits" or os.geteuid() != 0:
            return None
        return _hidden_from_others(self.readonly)

    def describe(self) -> str:
        lim = self.limits
        caps = (f"{lim.memory_mb} MB memory, {lim.cpu_s} CPU s, {lim.file_mb} MB files, "
                f"{lim.procs} processes")  # fmt: skip
        if self.mode == "bwrap":
            return f"bubblewrap: own root, no data dir or keys, no network unless allowed; {caps}"
        return (f"limits only ({self.reason}): workloads see the filesystem as their uid does "
                f"and have the network; {caps}")  # fmt: skip

    def prepare(
        self,
        command: list[str],
        workdir: Path,
        env: dict[str, str],
        *,
        network: bool = False,
        gpus: tuple[int, ...] = (),
        shared: tuple[str, ...] = (),
    ) -> Jail:
        """The jail for ``command`` over ``workdir`` (given to the workload's uid).

        ``shared`` names the folders of ``workdir`` that hold hard links to files other tasks
        share (the node's read-only copy of each dataset, :mod:`storage.dataset_trees`). They
        stay the node's, so the workload's uid cannot make them writable; bwrap also binds
        them read-only, so the workload cannot even chmod them.
        """
        root = os.geteuid() == 0
        if root:
            _give_tree(workdir, NOBODY, frozenset(shared))
        inner = [self.prlimit, *self.limits.prlimit_args(), "--", *command]
        if self.mode == "limits":
            popen = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if root else {}
            return Jail(inner, {**env, "HOME": str(workdir)}, workdir, popen, str(workdir))
        if root:
            inner = [self.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                     "--", *inner]  # fmt: skip
        args = self._bwrap_args(workdir, network, gpus, root)
        for name in shared:
            if (workdir / name).is_dir():
                args += ["--ro-bind", str(workdir / name), f"{TASK_DIR}/{name}"]
        return Jail([self.bwrap, *args, "--", *inner], {**env, "HOME": TASK_DIR}, workdir)

    def _bwrap_args(
        self, workdir: Path, network: bool, gpus: tuple[int, ...], root: bool
    ) -> list[str]:
        # As root, no user namespace: the uid drop inside must be a real one (see above).
        # No --die-with-parent: its signal follows the *thread* that forked bwrap, and trio
        # forks from worker threads that retire when idle, killing long jobs (the runtime
        # stops the jail itself, see gpu.runtime.run_logged).
        args = ["--new-session", *(_UNSHARE if root else ["--unshare-all"])]
        args += ["--share-net"] if network and not root else []
        args += ["--unshare-net"] if root and not network else []
        for system in SYSTEM_DIRS:
            if os.path.islink(system):
                args += ["--symlink", os.readlink(system), system]
            elif os.path.isdir(system):
                args += ["--ro-bind", system, system]
        # The private /tmp first: a Python environment under /tmp (a checkout there) is bound
        # over it below rather than hidden by it.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108
        args += _same_machine_names(workdir.parent / ".jail-empty")
        made: set[Path] = {Path("/tmp")}  # noqa: S108
        for path in self.readonly:
            if any(path.is_relative_to(d) for d in SYSTEM_DIRS):
                continue
            # bwrap would make the parents 0700 (as /root is): the workload's uid needs a way in
            for parent in reversed(path.parents[:-1]):
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", str(path), str(path)]
        for device in [*(f"/dev/nvidia{i}" for i in gpus), *(NVIDIA_SHARED if gpus else ())]:
            if os.path.exists(device):
                args += ["--dev-bind", device, device]
        args += ["--bind", str(workdir), TASK_DIR, "--chdir", TASK_DIR]
        return args


def shared_task_root(private: Path, base: Path = SHARED_BASE) -> Path:
    """The task folders' directory of the node whose work directory is ``private``, outside
    it: ``/var/tmp/idlegrid-tasks-<hash of the path>`` (on disk, where /tmp may be memory),
    ours and mode 0711, so a workload passes through to its own folder (0700, its uid's)
    without listing the others'.

    Raises:
        SandboxUnavailable: the directory exists and is not ours (another user made it first
            in the world-writable /var/tmp, perhaps to read our tasks): remove it.
    """
    digest = hashlib.blake2b(str(private.resolve()).encode(), digest_size=6).hexdigest()
    root = base / f"idlegrid-tasks-{digest}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o711)
    found = root.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        raise SandboxUnavailable(
            f"{root} (where workloads' task folders go, since they cannot enter {private}) "
            "exists but is not a directory of this user: remove it"
        )
    root.chmod(0o711)  # mkdir's mode went through the umask, or an old run left another
    return root


def _give_tree(root: Path, uid: int, shared: frozenset[str] = frozenset()) -> None:
    """Makes the task directory the workload's own (its inputs were unpacked by the node),
    and only its own: other local users may pass its parent (see :func:`shared_task_root`).

    The folders named in ``shared`` stay the node's: their files are other tasks' too. All
    workloads of a root node in ``limits`` mode run as one uid, so another task's workload
    could rename or swap what is below ``root`` while this walks it, to have the node hand it
    a shared file. So ``root`` is the node's alone (0700) until the walk is done, the walk
    never follows a link, and no file with another name elsewhere (a hard link: the shared
    copy's) is handed over, wherever it turns up.
    """
    os.chown(root, os.geteuid(), os.getegid(), follow_symlinks=False)
    root.chmod(0o700)  # no way in for a workload until the end
    for base, dirs, files in os.walk(root, followlinks=False):
        if base == str(root):
            dirs[:] = [d for d in dirs if d not in shared]
        for name in dirs + files:
            path = os.path.join(base, name)
            found = os.lstat(path)
            if stat.S_ISREG(found.st_mode) and found.st_nlink > 1:
                continue
            os.chown(path, uid, uid, follow_symlinks=False)
    os.chown(root, uid, uid, follow_symlinks=False)


def _hidden_from_others(paths: tuple[Path, ...]) -> Path | None:
    """The first directory on the way to ``paths`` that other users may not enter, if any."""
    for path in paths:
        for directory in [*reversed(path.parents), path]:
            try:
                mode = directory.stat().st_mode
            except OSError:
                continue  # a path that is not there is the runtime's problem, not the uid's
            if directory.is_dir() and not mode & 0o001:
                return directory
    return None


def _probe(bwrap: str) -> str | None:
    """None when bwrap can build a jail here (user namespaces allowed), else why not."""
    unshare = _UNSHARE if os.geteuid() == 0 else ["--unshare-all"]
    argv = [bwrap, *unshare, "--ro-bind", "/", "/", "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run ({exc})"
    if done.returncode != 0:
        return f"bwrap cannot build a jail here ({done.stderr.decode(errors='replace').strip()})"
    return None


def _same_machine_names(empty: Path) -> list[str]:
    """bwrap arguments that give every jail the same host name (the UTS namespace is unshared
    in both modes, so it is the jail's own) and empty files for those that name the machine:
    bound from ``empty``, a file of ours beside the task folders (``/dev/null`` would be a
    device node on a mount without devices, which the workload may not open)."""
    if not empty.is_file():
        empty.touch(mode=0o444)
    args = ["--hostname", JAIL_HOSTNAME]
    for path in MACHINE_NAMES:
        if os.path.isfile(path) and not os.path.islink(path):
            args += ["--ro-bind", str(empty), path]
    return args
