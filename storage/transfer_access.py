"""Who may fetch which dataset from this node (grants), and what the last fetch measured of
each route it probed (probes). Plain functions over a ``sqlite3.Connection``, like
:mod:`storage.transfer_journal`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeRow:
    peer_id: str
    route: str
    state: str  # used, standby, slow, lacks, unreachable, dropped
    rtt_us: int | None
    rate_bps: int
    window: int
    updated_ms: int


def grant(conn: sqlite3.Connection, dataset_id: bytes, peers: list[str], now_ms: int) -> None:
    """Let each of ``peers`` (``*``: anyone) fetch ``dataset_id`` from this node."""
    conn.executemany(
        "INSERT OR IGNORE INTO transfer_grants VALUES (?, ?, ?)",
        ((dataset_id, peer, now_ms) for peer in peers),
    )


def grants(conn: sqlite3.Connection, dataset_id: bytes) -> list[str]:
    """The peers granted ``dataset_id`` (``*``: anyone)."""
    rows = conn.execute(
        "SELECT peer FROM transfer_grants WHERE dataset_id = ? ORDER BY created_ms", (dataset_id,)
    )
    return [r[0] for r in rows]


def record_probes(conn: sqlite3.Connection, dataset_id: bytes, rows: list[ProbeRow]) -> None:
    conn.executemany(
        "INSERT INTO transfer_probes VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (dataset_id, peer_id) DO UPDATE SET route = excluded.route,"
        " state = excluded.state, rtt_us = excluded.rtt_us, rate_bps = excluded.rate_bps,"
        " win = excluded.win, updated_ms = excluded.updated_ms",
        (
            (dataset_id, r.peer_id, r.route, r.state, r.rtt_us, r.rate_bps, r.window, r.updated_ms)
            for r in rows
        ),
    )


def probes(conn: sqlite3.Connection, dataset_id: bytes) -> list[ProbeRow]:
    rows = conn.execute(
        "SELECT peer_id, route, state, rtt_us, rate_bps, win, updated_ms FROM transfer_probes"
        " WHERE dataset_id = ? ORDER BY rtt_us IS NULL, rtt_us",
        (dataset_id,),
    )
    return [ProbeRow(*tuple(r)) for r in rows]
