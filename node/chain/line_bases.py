"""The final amounts of the lines the anchoring machine let go, kept in ``settle_bases``.

The machine (:mod:`consensus.settlement.anchoring`) keeps only open lines in memory: a line
anchored in full is written here, then dropped (:meth:`Anchoring.settle`). Every way a line
comes back goes through :meth:`LineBases.restore` first: a voucher for it (a worker resends
until it sees its line final; a larger one adds only the difference), a cap, or another
anchorer's entry naming it (rebuilt, or audited against our base). A line not found here was
never anchored by a final epoch this machine knew: before this table, the machine held every
line, and each is written here the first time it settles.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import trio

from consensus.settlement.anchoring import Anchoring
from consensus.settlement.epoch import Entry, Line
from storage.db import Database

KEEP = (  # final amounts only grow: the latest settle of a line is its base
    "INSERT INTO settle_bases (job, task, worker, requester, amount) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (job, task, worker) DO UPDATE SET requester = excluded.requester, "
    "amount = excluded.amount"
)


class LineBases:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Held by settle() and by whoever restores a line and then updates it across awaits
        # (the anchorer's voucher and cap): a line let go in between would be updated from
        # no base, as if never anchored, and paid again.
        self.lock = trio.Lock()
        # Lines looked up and not found: none is written but by settle(), which forgets
        # these, so a heard epoch's new lines are not looked up again at every step.
        self._absent: set[Line] = set()

    async def settle(self, m: Anchoring) -> int:
        """Writes the lines ``m`` may let go, then lets them go; returns how many went."""
        async with self.lock:
            kept = m.settled()
            if not kept:
                return 0
            rows = [(e.job, e.task, e.worker, e.requester, str(e.amount)) for e in kept]

            def write(c: sqlite3.Connection) -> None:
                c.executemany(KEEP, rows)

            await self.db.transaction(write)
            self._absent.clear()
            return m.settle(e.line for e in kept)

    async def restore(self, m: Anchoring, entries: Iterable[Entry]) -> int:
        """Gives ``m`` back the base of every line of ``entries`` it let go; returns how many
        lines it looked up (0: it did not wait). Callers do not run beside :meth:`settle`:
        the anchorer's step runs both, and vouchers and caps hold :attr:`lock`."""
        wanted = {
            e.line
            for e in entries
            if e.line not in m.latest and e.line not in m.base_lines and e.line not in self._absent
        }
        if not wanted:
            return 0
        found = await self.read(sorted(wanted))
        for entry in found:
            m.restore(entry)
        self._absent |= wanted - {e.line for e in found}
        return len(wanted)

    async def read(self, lines: list[Line]) -> list[Entry]:
        """The kept final entries of those of ``lines`` let go (previous 0)."""

        def read(c: sqlite3.Connection) -> list[Entry]:
            out = []
            for job, task, worker in lines:
                row = c.execute(
                    "SELECT requester, amount FROM settle_bases "
                    "WHERE job = ? AND task = ? AND worker = ?",
                    (job, task, worker),
                ).fetchone()
                if row is not None:
                    out.append(Entry(bytes(row[0]), worker, job, task, int(row[1])))
            return out

        return await self.db.transaction(read)
