"""Imports point down: node -> {p2p, storage, gpu} -> consensus -> stdlib, and consensus is pure.

Read from the source with ``ast`` (not grep), so an import inside a function or a
``from x import y`` cannot slip past.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the pure layer may use besides the standard library (DESIGN.md, "Layers and folders").
CONSENSUS_ALLOWED = {"consensus", "msgpack", "nacl", "blake3", "eth_hash", "eth_abi"}
# Forbidden in consensus even though some are stdlib: they mean I/O, threads or a clock.
CONSENSUS_FORBIDDEN_STDLIB = {
    "socket", "sqlite3", "threading", "asyncio", "subprocess", "selectors", "ssl", "http",
    "urllib", "os", "shutil", "tempfile", "multiprocessing", "io", "pathlib",
}  # fmt: skip
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "time_ns"), ("datetime", "now")}
LAYERS = {
    "consensus": set(),
    "storage": {"consensus"},
    "p2p": {"consensus"},
    "gpu": {"consensus"},
    "config": set(),
    "node": {"consensus", "storage", "p2p", "gpu", "config"},
}


def python_files(package: str) -> Iterator[Path]:
    yield from sorted((REPO / package).rglob("*.py"))


def imported_roots(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_consensus_imports_only_pure_modules() -> None:
    bad = []
    for path in python_files("consensus"):
        for line, root in imported_roots(parse(path)):
            stdlib = root in sys.stdlib_module_names
            if root in CONSENSUS_FORBIDDEN_STDLIB or not (stdlib or root in CONSENSUS_ALLOWED):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {root}")
    assert not bad, "consensus/ must stay pure:\n" + "\n".join(bad)


def test_consensus_reads_no_clock() -> None:
    bad = []
    for path in python_files("consensus"):
        for node in ast.walk(parse(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in CLOCK_CALLS
            ):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, "consensus/ reads a clock; pass now_ms in instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_down(package: str) -> None:
    ours = set(LAYERS)
    bad = []
    for path in python_files(package):
        for line, root in imported_roots(parse(path)):
            if root in ours and root != package and root not in LAYERS[package]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {root}")
    assert not bad, f"{package}/ may import only {sorted(LAYERS[package])}:\n" + "\n".join(bad)
