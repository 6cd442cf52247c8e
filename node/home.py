"""The data dir ("home"): where everything a node owns lives, and who may use it.

Layout::

    HOME/
      idlegrid.toml     settings (written by ``idlegrid init``, edited by the operator)
      keys/             0700; node.key (Ed25519), wallet.key (secp256k1), both 0600
      identity.json     public: peer id, X25519 key, chain address, signed binding
      api.token         0600; bearer token for the local API
      api.json          written by the running daemon: API port and pid (removed on exit)
      node.lock         held (flock) by the running daemon; holds its pid
      node.db           sqlite (WAL) with the node's state
      blobs/            content-addressed blobs (BLAKE3-named)
      logs/node.log     structured JSON logs

Several daemons run side by side on one machine by giving each its own home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs


class HomeError(Exception):
    """The data dir cannot be used as it is (not initialised, locked, unsafe permissions)."""


class AlreadyRunning(HomeError):
    def __init__(self, home: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another idlegrid daemon ({who}) is using {home}; stop it with "
            f"`idlegrid node stop --home {home}` or choose another --home"
        )
        self.pid = pid


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("idlegrid", appauthor=False))


def resolve_home(home: str | Path | None) -> Path:
    """``--home`` wins, then ``IDLEGRID_HOME``, then the platform's user data dir."""
    chosen = home or os.environ.get("IDLEGRID_HOME") or default_home()
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "idlegrid.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identity(self) -> Path:
        return self.root / "identity.json"

    @property
    def token(self) -> Path:
        return self.root / "api.token"

    @property
    def api(self) -> Path:
        return self.root / "api.json"

    @property
    def lock(self) -> Path:
        return self.root / "node.lock"

    @property
    def db(self) -> Path:
        return self.root / "node.db"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def work(self) -> Path:
        """Task folders (a worker's), replays and probes (a sentry's)."""
        return self.root / "work"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def is_initialised(self) -> bool:
        return self.identity.exists()

    def require_initialised(self) -> None:
        if not self.is_initialised():
            raise HomeError(
                f"{self.root} is not initialised: run `idlegrid init --home {self.root}`"
            )

    def create_dirs(self) -> None:
        for path in (self.root, self.keys, self.logs):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.keys.chmod(0o700)

    def read_token(self) -> str:
        check_private(self.token)
        return self.token.read_text(encoding="ascii").strip()

    def ensure_token(self) -> None:
        if not self.token.exists():
            write_private(self.token, secrets.token_urlsafe(32).encode("ascii"))


def check_private(path: Path) -> None:
    """Refuses a secret file that others could read: a leaked key or token costs real money."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(
            f"{path} has mode {stat.S_IMODE(mode):04o}; it holds a secret and must be readable by "
            f"its owner only: run `chmod 600 {path}`"
        )


def check_private_dir(path: Path) -> None:
    """Refuses a folder of secrets that others could enter or write: one could list them, the
    other swap the wallet key for theirs, and be paid in our stead."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(
            f"{path} has mode {stat.S_IMODE(mode):04o}; it holds the node's keys and must be "
            f"open to its owner only: run `chmod 700 {path}`"
        )


def write_private(path: Path, data: bytes) -> None:
    """Writes a 0600 file atomically: it is never visible half-written or with wider permissions."""
    write_atomic(path, data, mode=0o600)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class NodeLock:
    """An exclusive ``flock`` on ``node.lock``, held for the daemon's lifetime.

    flock (not a bare PID file) because the kernel drops it when the process dies, kill -9
    included, so a crash never leaves a stale lock that blocks the next start.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.home.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.home.root, running_pid(self.home)) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def running_pid(home: Home) -> int | None:
    """The pid of the daemon holding ``home``'s lock, or None when no daemon holds it."""
    try:
        fd = os.open(home.lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_api_info(home: Home) -> dict[str, Any] | None:
    """What the running daemon recorded about its API, or None when it has not (yet)."""
    try:
        info: dict[str, Any] = json.loads(home.api.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info
