"""The anchoring machine as plain msgpack-able data, so a sentry's driver can save it after every
step and a restart (even after kill -9) carries on where it was: a pending epoch is neither lost
nor anchored twice.

Amounts travel as decimal strings (they exceed msgpack's 64-bit integers). The pending epoch is
saved as its entries only: :func:`consensus.settlement.epoch.assemble` over them and the saved
base gives back the very same trees.
"""

from __future__ import annotations

from typing import Any

from consensus.errors import Invalid
from consensus.settlement.anchoring import Anchoring
from consensus.settlement.epoch import Entry, Spend, assemble

VERSION = 3  # 2: entries carry ``previous``; 3: what final epochs debited each requester
READS = (1, 2, 3)  # a version 1 row has no ``previous``: 0, as every unanchored voucher's is


def entry_row(e: Entry) -> list[Any]:
    """An entry as a msgpack-able row (amounts as decimal strings): the one form entries are
    saved and served in, here and by the anchoring driver (heard entries, epoch history)."""
    return [e.requester, e.worker, e.job, e.task, str(e.amount), str(e.previous)]


def entry_of_row(row: list[Any]) -> Entry:
    previous = int(row[5]) if len(row) > 5 else 0
    return Entry(bytes(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]), previous)


def dump(m: Anchoring) -> dict[str, Any]:
    """Everything the machine knows, as msgpack-able values."""
    return {
        "v": VERSION,
        "epoch_ms": m.epoch_ms,
        "fee_bps": m.fee_bps,
        "state": m.state,
        "latest": [[*entry_row(e), sig] for e, sig in m.latest.values()],
        "base_lines": [[*line, str(a)] for line, a in m.base_lines.items()],
        "base_earnings": [[w, str(a)] for w, a in m.base_earnings.items()],
        "pending": None if m.pending is None else [entry_row(e) for e in m.pending.entries],
        "index": m.index,
        "unfinal": m.unfinal,
        "window_end_ms": m.window_end_ms,
        "last_post_ms": m.last_post_ms,
        "open_disputes": sorted(m.open_disputes),
        "signatures": [[leaf, sig] for leaf, sig in m.signatures.items()],
        "caps": [[*line, str(a)] for line, a in m.caps.items()],
        "spends": [[s.requester, str(s.cumulative), s.signature] for s in m.spends.values()],
        "anchored": [[r, str(a)] for r, a in m.anchored.items()],
    }


def load(doc: dict[str, Any]) -> Anchoring:
    """The machine :func:`dump` saved.

    Raises:
        Invalid: a state from another version, or one that does not hold together.
    """
    if doc.get("v") not in READS:
        raise Invalid("anchoring.state", f"version {doc.get('v')!r}, expected one of {READS}")
    width = 6 if doc["v"] >= 2 else 5  # a row of ``latest`` is an entry and its signature
    m = Anchoring(epoch_ms=int(doc["epoch_ms"]), fee_bps=int(doc["fee_bps"]))
    for row in doc["latest"]:
        entry = entry_of_row(row[:width])
        m.latest[entry.line] = (entry, bytes(row[width]))
    m.base_lines = {(bytes(j), bytes(t), bytes(w)): int(a) for j, t, w, a in doc["base_lines"]}
    m.base_earnings = {bytes(w): int(a) for w, a in doc["base_earnings"]}
    if doc["pending"] is not None:
        entries = [entry_of_row(r) for r in doc["pending"]]
        m.pending = assemble(entries, m.base_lines, m.base_earnings, m.fee_bps)
    m.state, m.index, m.unfinal = str(doc["state"]), int(doc["index"]), bool(doc["unfinal"])
    m.window_end_ms, m.last_post_ms = int(doc["window_end_ms"]), doc["last_post_ms"]
    m.open_disputes = {bytes(x) for x in doc["open_disputes"]}
    m.signatures = {bytes(leaf): bytes(sig) for leaf, sig in doc["signatures"]}
    m.caps = {(bytes(j), bytes(t), bytes(w)): int(a) for j, t, w, a in doc.get("caps", [])}
    for r, cumulative, sig in doc.get("spends", []):  # absent before spends: workers resend
        m.spends[bytes(r)] = Spend(bytes(r), int(cumulative), bytes(sig))
    if doc["v"] >= 3:
        m.anchored = {bytes(r): int(a) for r, a in doc["anchored"]}
    else:  # every line was in memory then: their final amounts are what was debited
        for line, amount in m.base_lines.items():
            if (known := m.latest.get(line)) is not None:
                r = known[0].requester
                m.anchored[r] = m.anchored.get(r, 0) + amount
    if m.state in ("posting", "pending") and m.pending is None:
        raise Invalid("anchoring.state", f"state {m.state} without a pending epoch")
    return m
