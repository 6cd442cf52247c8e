"""Every chain transaction this node asks for, in sqlite (table ``chain_txs``).

A row is written ``pending`` BEFORE anything is sent, becomes ``sent`` with the signed bytes and
hash, then ``mined`` or ``reverted`` from its receipt. So a crash or an outage at any point
leaves a row that says what to do next: retry a pending one, reconcile a sent one. The embedded
chain, which lives in memory, is rebuilt at start-up by replaying the mined rows in order.

Used from the chain thread only (see :mod:`node.chain.service`); its connection may move between
threads, but never runs two statements at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.db import configure
from storage.migrations import MIGRATIONS, apply_migrations

STATES = ("pending", "sent", "mined", "reverted", "failed")


@dataclass(frozen=True)
class TxRow:
    id: int
    chain_id: int
    contract: str
    op: str
    args: list[Any]
    value_wei: int
    sender: str
    state: str
    tx_hash: str | None
    raw_tx: bytes | None
    gas_used: int | None
    block: int | None
    error: str
    attempts: int
    created_ms: int


def encode_args(args: list[Any]) -> str:
    """JSON with ints as decimal strings (beyond 2**53) and bytes as 0x hex, tagged; booleans
    (a multiproof's flags) as JSON's own, checked first since a bool is an int in Python."""

    def enc(v: Any) -> Any:
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return {"int": str(v)}
        if isinstance(v, bytes):
            return {"bytes": "0x" + v.hex()}
        if isinstance(v, list | tuple):
            return [enc(x) for x in v]
        return v  # str: an address

    return json.dumps([enc(a) for a in args])


def decode_args(text: str) -> list[Any]:
    def dec(v: Any) -> Any:
        if isinstance(v, dict) and "int" in v:
            return int(v["int"])
        if isinstance(v, dict) and "bytes" in v:
            return bytes.fromhex(v["bytes"][2:])
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    return [dec(a) for a in json.loads(text)]


class Journal:
    """The ``chain_txs`` table of one node database."""

    def __init__(self, path: Path, clock_ms: Callable[[], int] | None = None) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure(self._conn)
        apply_migrations(self._conn, MIGRATIONS)
        self._lock = threading.Lock()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def begin(  # noqa: PLR0917 - one row, one call
        self, chain_id: int, contract: str, op: str, args: list[Any], value: int, sender: str
    ) -> int:
        now = self._clock_ms()
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO chain_txs (chain_id, contract, op, args, value_wei, sender, state,"
                " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (chain_id, contract, op, encode_args(args), str(value), sender, now, now),
            )
            return int(cur.lastrowid or 0)

    def update(self, row_id: int, state: str, **fields: Any) -> None:
        """Move a row to ``state``, setting any of tx_hash, raw_tx, gas_used, block, error."""
        if state not in STATES:
            raise ValueError(f"state {state!r} not in {STATES}")
        allowed = {"tx_hash", "raw_tx", "gas_used", "block", "error"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown journal fields {sorted(set(fields) - allowed)}")
        sets = "".join(f", {k} = ?" for k in fields)
        with self._lock:
            self._conn.execute(
                f"UPDATE chain_txs SET state = ?, attempts = attempts + 1, updated_ms = ?{sets}"  # noqa: S608
                " WHERE id = ?",
                (state, self._clock_ms(), *fields.values(), row_id),
            )

    def rows(
        self, *states: str, chain_id: int | None = None, contract: str | None = None
    ) -> list[TxRow]:
        sql = "SELECT * FROM chain_txs WHERE 1 = 1"
        params: list[Any] = []
        if states:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            params += states
        if chain_id is not None:
            sql += " AND chain_id = ?"
            params.append(chain_id)
        if contract is not None:
            sql += " AND contract = ?"
            params.append(contract)
        with self._lock:
            found = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [_row(r) for r in found]


def _row(r: sqlite3.Row) -> TxRow:
    return TxRow(
        id=r["id"],
        chain_id=r["chain_id"],
        contract=r["contract"],
        op=r["op"],
        args=decode_args(r["args"]),
        value_wei=int(r["value_wei"]),
        sender=r["sender"],
        state=r["state"],
        tx_hash=r["tx_hash"],
        raw_tx=r["raw_tx"],
        gas_used=r["gas_used"],
        block=r["block"],
        error=r["error"],
        attempts=r["attempts"],
        created_ms=r["created_ms"],
    )
