"""The compiled contract, loaded from ``contracts/artifacts/`` (committed, built by solc-js).

A node needs neither Node.js nor a compiler. The artifact lists the hash of every source that
went into it; :func:`load` checks our own sources against it when they are present, so an edited
contract with stale artifacts is caught even without Node.js (``npm run check`` in
``contracts/`` does the full byte-for-byte rebuild).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
NAME = "IdlegridSettlement"


class StaleArtifact(Exception):
    """A source file no longer matches the hash recorded in its artifact."""


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str
    source_hash: str
    sources: dict[str, str]


def load(name: str = NAME, root: Path = CONTRACTS) -> Artifact:
    """Read ``artifacts/<name>.json`` and check it against the sources next to it.

    Raises:
        FileNotFoundError: no artifact (the contracts were never built).
        StaleArtifact: a source under ``src/`` changed since the artifact was built.
    """
    doc = json.loads((root / "artifacts" / f"{name}.json").read_text(encoding="utf-8"))
    for path, digest in doc["sources"].items():
        local = root / path
        if path.startswith("src/") and local.exists():
            actual = hashlib.sha256(local.read_bytes()).hexdigest()
            if actual != digest:
                raise StaleArtifact(
                    f"{local}: sha256 {actual[:12]}... but the artifact was built from "
                    f"{digest[:12]}...; run `npm run build` in contracts/"
                )
    return Artifact(
        name=name,
        abi=doc["abi"],
        bytecode=doc["bytecode"],
        compiler=f"{doc['compiler']['name']} {doc['compiler']['version']}",
        source_hash=doc["sourceHash"],
        sources=doc["sources"],
    )
