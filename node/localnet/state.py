"""What a running localnet is: its processes and ports, in ``DIR/localnet.json``.

The file is written by ``localnet start`` as each process comes up (so a start that fails
half-way can still be stopped) and read by ``status``, ``stop`` and ``logs`` from any shell.
A process is identified by its pid *and* its start time, so a pid the kernel has reused for
something else never counts as a live node, and ``stop`` never signals a stranger.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from node.home import Home, running_pid, write_atomic

STATE_FILE = "localnet.json"
STATE_VERSION = 1
# psutil's start time is the kernel's boot time plus the process's age; the boot time it reads
# (/proc/stat btime) is a whole second derived from the wall clock, so a clock adjustment can
# move it by a second. Our pid is one started within this of the recorded time.
START_TIME_SLACK_S = 1.5


@dataclass
class Proc:
    """One process the localnet started (a daemon or the chain)."""

    pid: int = 0
    create_time: float = 0.0  # psutil's start time: tells our pid from a reused one

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, psutil.Process(pid).create_time())

    def alive(self) -> bool:
        if not self.pid:
            return False
        try:
            p = psutil.Process(self.pid)
            ours = abs(p.create_time() - self.create_time) <= START_TIME_SLACK_S
            return bool(ours and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


@dataclass
class ChainInfo:
    kind: str  # "anvil" | "embedded"
    url: str
    chain_id: int = 0
    contract: str = ""
    log: str = ""
    proc: Proc = field(default_factory=Proc)


@dataclass
class NodeInfo:
    name: str  # requester-1, worker-2, sentry-1
    role: str
    home: str
    p2p_port: int  # chosen for the first node (the bootstrap peer); others report theirs
    peer_id: str
    address: str  # the node's chain account
    price_wei_per_s: int | None = None  # workers only
    api_port: int | None = None  # known once its API answers
    proc: Proc = field(default_factory=Proc)

    @property
    def log(self) -> Path:
        return Path(self.home) / "logs" / "daemon.out"

    def live_proc(self) -> Proc:
        """The daemon running in this node's home: the one the localnet started, or one
        started by hand there since (``node stop``, then ``node start --home``), found by
        the home's lock."""
        if self.proc.alive():
            return self.proc
        pid = running_pid(Home(Path(self.home)))
        if pid is None:
            return self.proc
        try:
            return Proc.of(pid)
        except psutil.Error:  # it exited just now
            return self.proc


@dataclass
class State:
    dir: str
    chain: ChainInfo
    nodes: list[NodeInfo] = field(default_factory=list)
    version: int = STATE_VERSION

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    def procs(self) -> list[tuple[str, Proc]]:
        """Every process, nodes first: stop takes the daemons down before their chain."""
        return [(n.name, n.live_proc()) for n in self.nodes] + [("chain", self.chain.proc)]

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs() if proc.alive()]

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"no node {name!r} in this localnet (nodes: {known})")

    def save(self) -> None:
        write_atomic(self.path, (json.dumps(asdict(self), indent=2) + "\n").encode())


def load_state(root: Path) -> State | None:
    """The state in ``root``, or None when no localnet was started there.

    Raises:
        ValueError: the file exists but is not a localnet state this version can read.
    """
    path = root / STATE_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable localnet state ({exc})") from None
    if doc.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: state version {doc.get('version')!r}, expected {STATE_VERSION}")
    try:
        chain = doc["chain"]
        nodes = [NodeInfo(**{**n, "proc": Proc(**n["proc"])}) for n in doc["nodes"]]
        return State(doc["dir"], ChainInfo(**{**chain, "proc": Proc(**chain["proc"])}), nodes)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed localnet state ({exc!r})") from None
