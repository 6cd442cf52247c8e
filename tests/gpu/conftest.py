"""Shared pieces for runtime tests: a node-like data dir with a key, and sandboxes."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from gpu.runtimes import python_paths
from gpu.sandbox import Limits, Sandbox

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
# Looked up, never imported here: bpy brings Blender's own top-level "gpu" module, which would
# stand in for ours in this process (render jobs run it in child processes).
needs_bpy = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None,
    reason="Blender's bpy is not installed (pip install '.[render]')",
)
SECRET = b"node-key-secret-bytes-0123456789"


@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    """A data dir laid out like a node's: 0700 dirs, a 0600 key file, the work dir inside."""
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    key = home / "keys" / "node.key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    (home / "work").mkdir()
    return home


@pytest.fixture
def workdir(node_home: Path) -> Path:
    path = node_home / "work" / "task-0"
    path.mkdir()
    return path


def sandbox(mode: str = "bwrap", **limits: int) -> Sandbox:
    return Sandbox.create(mode, Limits(**limits), readonly=python_paths())


def is_root() -> bool:
    return os.geteuid() == 0
