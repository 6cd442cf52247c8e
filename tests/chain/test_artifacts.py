"""The committed artifacts are what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from node.chain import artifacts

CONTRACTS = artifacts.CONTRACTS


def test_artifact_records_compiler_settings_and_source_hashes() -> None:
    art = artifacts.load()  # also checks src/ against the recorded hashes
    doc = json.loads((CONTRACTS / "artifacts" / "IdlegridSettlement.json").read_text())
    lock = json.loads((CONTRACTS / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/solc"]["version"]
    assert doc["compiler"]["version"].startswith(pinned + "+commit.")
    assert doc["settings"]["evmVersion"] == "cancun"
    assert "src/IdlegridSettlement.sol" in art.sources
    assert any(p.startswith("@openzeppelin/contracts/") for p in art.sources)
    assert art.bytecode.startswith("0x") and len(art.bytecode) > 10_000 and len(art.abi) > 20


def test_an_edited_source_is_caught_without_nodejs(tmp_path: Path) -> None:
    shutil.copytree(CONTRACTS / "src", tmp_path / "src")
    shutil.copytree(CONTRACTS / "artifacts", tmp_path / "artifacts")
    sol = tmp_path / "src" / "IdlegridSettlement.sol"
    sol.write_text(sol.read_text() + "\n// edited\n")
    with pytest.raises(artifacts.StaleArtifact, match="npm run build"):
        artifacts.load(root=tmp_path)


def test_rebuild_is_byte_identical() -> None:
    node = shutil.which("node")
    if node is None or not (CONTRACTS / "node_modules" / "solc").is_dir():
        pytest.skip("needs Node.js and `npm ci` in contracts/ (the pinned solc-js)")
    out = subprocess.run(
        [node, "build.js", "--check"],
        check=False,
        cwd=CONTRACTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "artifacts match the sources" in out.stdout
