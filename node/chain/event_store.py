"""The contract's scanned epoch events in the node's database (``chain_event_scans``,
``chain_events``), so a restart or a wallet command reads only the blocks since the last scan
instead of the whole chain since the deployment (:mod:`node.chain.logs`).

Only for an rpc chain: the embedded one is rebuilt on every start, its blocks new each time.
Logs are kept as the endpoint gave them (JSON) and decoded when loaded. A scan is trusted only
while the chain still has the last block it read, with the same hash: a chain that reorganised
deeper than the re-read depth, or another chain under the same id (a restarted anvil), is not
used: the next look reads from the start again, and its save replaces it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.datastructures import AttributeDict

from storage.db import configure
from storage.migrations import MIGRATIONS, apply_migrations

HEX_FIELDS = ("blockHash", "transactionHash", "data")


@dataclass(frozen=True)
class Saved:
    """A scan as kept: its start block, last block read and that block's hash, and its logs
    (raw, in block order)."""

    start: int
    scanned: int
    scanned_hash: bytes
    logs: list[AttributeDict[str, Any]]


def to_json(raw: Any) -> str:
    return Web3.to_json(raw)


def from_json(text: str) -> AttributeDict[str, Any]:
    """A raw log as ``eth_getLogs`` gives it (hashes and data as bytes), from its JSON."""
    fields = json.loads(text)
    for name in HEX_FIELDS:
        fields[name] = HexBytes(fields[name])
    fields["topics"] = [HexBytes(t) for t in fields["topics"]]
    return AttributeDict(fields)


class EventStore:
    """One contract's scan on one chain, in the node database at ``path``."""

    def __init__(self, path: Path, chain_id: int, contract: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure(self._conn)
        apply_migrations(self._conn, MIGRATIONS)
        self._lock = threading.Lock()
        self._key = (chain_id, contract)

    def load(self) -> Saved | None:
        with self._lock:
            scan = self._conn.execute(
                "SELECT start, scanned, scanned_hash FROM chain_event_scans"
                " WHERE chain_id = ? AND contract = ?",
                self._key,
            ).fetchone()
            if scan is None:
                return None
            rows = self._conn.execute(
                "SELECT log FROM chain_events WHERE chain_id = ? AND contract = ?"
                " ORDER BY block, log_index",
                self._key,
            ).fetchall()
        logs = [from_json(r["log"]) for r in rows]
        return Saved(scan["start"], scan["scanned"], bytes(scan["scanned_hash"]), logs)

    def save(self, start: int, since: int, logs: Sequence[tuple[int, int, str]], scanned: int,
             scanned_hash: bytes) -> None:  # fmt: skip
        """Store the scan: ``logs`` ((block, index, raw JSON), every one kept) of which those
        from block ``since`` on are new, read up to block ``scanned``; one transaction.

        Only the new ones are written when the store holds the scan up to ``since`` from the
        same start; otherwise (another process, say a wallet command, left another scan or
        none) the whole of it is replaced.
        """
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            held = self._conn.execute(
                "SELECT start, scanned FROM chain_event_scans WHERE chain_id = ? AND contract = ?",
                self._key,
            ).fetchone()
            if held is None or held["start"] != start or held["scanned"] < since - 1:
                since = -1
            self._conn.execute(
                "DELETE FROM chain_events WHERE chain_id = ? AND contract = ? AND block >= ?",
                (*self._key, since),
            )
            self._conn.executemany(
                "INSERT INTO chain_events VALUES (?, ?, ?, ?, ?)",
                [(*self._key, block, index, raw) for block, index, raw in logs if block >= since],
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO chain_event_scans VALUES (?, ?, ?, ?, ?)",
                (*self._key, start, scanned, scanned_hash),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
