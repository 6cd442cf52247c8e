"""Epoch history between anchoring sentries (``/idlegrid/settle/epochs/1``).

A sentry follows other anchorers' epochs from the entries gossiped while each was pending
(:mod:`node.chain.follower`). One that was down for a whole window, lost every copy on
gossip, or starts after the network's first anchor asks an anchorer it has heard from for the
entries of every final epoch from the one it misses on. Nothing in an answer is trusted: the
follower rebuilds each epoch over its own base and takes it only when both roots equal the
chain's (:func:`consensus.settlement.following.rebuild`), so a peer that serves wrong or
partial entries only wastes a request (and costs score). Each anchoring sentry keeps the
entries of every final epoch it built on in ``settle_epochs``: about the size of the state it
keeps anyway (every line ever anchored).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from consensus.errors import Invalid
from consensus.settlement.anchoring import Anchoring
from consensus.settlement.anchoring_state import entry_of_row, entry_row
from consensus.settlement.epoch import Entry, Epoch
from consensus.settlement.following import ChainAnchor
from consensus.settlement.merkle import ENTRY_TYPES, MerkleTree
from p2p.reqresp import RequestError, RequestRejected
from storage.db import Database

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from node.chain.follower import Follower
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
PROTOCOL = "/idlegrid/settle/epochs/1"
MAX_BYTES = 2 << 20  # an answer; an epoch larger than half of it is served in parts
MAX_ROWS = 100_000
PART_ROWS = 6000  # entries per part of a large epoch: about 800 KB packed
MAX_PARTS = -(-MAX_ROWS // PART_ROWS)
NAME_LINE = (  # a line's last final epoch: only a later one replaces it
    "INSERT INTO settle_lines (job, task, worker, requester, idx) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (job, task, worker, requester) DO UPDATE SET idx = max(idx, excluded.idx)"
)
LOOK_PAGE = 64  # final epochs read at once when searching for a line's last entry
TIMEOUT_S = 10.0
RETRY_S = 30.0  # how often a sentry that cannot rebuild an epoch asks again
SIZES = (20, 20, 32, 32)  # requester, worker, job, task
AMOUNT = re.compile(r"[0-9]{1,78}")

Epochs = list[tuple[int, bytes, list[Entry]]]  # (index, entries root, entries)


def pack(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    return msgpack.packb([entry_row(e) for e in entries])  # type: ignore[no-any-return]


def unpack(blob: Any, what: str) -> list[Entry]:
    """Entries from a peer's packed rows.

    Raises:
        Invalid: not rows of four hashes of the right sizes and two decimal amounts.
    """
    if not isinstance(blob, bytes) or len(blob) > MAX_BYTES:
        raise Invalid(what, "expected packed rows")
    try:
        rows = msgpack.unpackb(blob, max_bin_len=64, max_str_len=80, max_array_len=MAX_ROWS)
    except (ValueError, msgpack.UnpackException) as exc:
        raise Invalid(what, f"malformed rows: {exc}") from None
    out = []
    for i, row in enumerate(rows if isinstance(rows, list) else [None]):
        ok = isinstance(row, list) and len(row) == 6 and all(_amount(x) for x in row[4:])
        ok = ok and all(
            isinstance(x, bytes) and len(x) == n for x, n in zip(row[:4], SIZES, strict=True)
        )
        if not ok:
            raise Invalid(
                f"{what}[{i}]", "expected [requester, worker, job, task, amount, previous]"
            )
        out.append(entry_of_row(row))
    return out


async def last_entry(
    db: Database, of: Entry, look: int | None = None
) -> tuple[int, Entry, list[bytes]] | None:
    """The entry of ``of``'s line (and requester, as the contract's line has it) in the latest
    final epoch of ``settle_epochs`` that holds it, with that epoch's index and the entry's
    proof there: the epoch ``settle_lines`` names, or for a line not named there (anchored
    before it was kept), searching the latest ``look`` epochs (None: all, a page at a time:
    each row holds a whole epoch)."""
    row = await db.query_one(
        "SELECT e.idx, e.entries FROM settle_lines l JOIN settle_epochs e ON e.idx = l.idx "
        "WHERE l.job = ? AND l.task = ? AND l.worker = ? AND l.requester = ?",
        (of.job, of.task, of.worker, of.requester),
    )
    if row is not None and (found := await trio.to_thread.run_sync(_entry_in, row, of)):
        return found
    found = await _search(db, of, look)
    if found is not None:  # the newest epoch holding it (newer ones were read): named now
        await db.execute(NAME_LINE, (of.job, of.task, of.worker, of.requester, found[0]))
    return found


def _entry_in(row: sqlite3.Row, of: Entry) -> tuple[int, Entry, list[bytes]] | None:
    """``of``'s line's entry in the epoch ``row`` holds, with its proof there."""
    try:
        entries = unpack(row["entries"], "settle_epochs.entries")
    except Invalid:  # a row of another form (before entries carried previous)
        return None
    for x in entries:
        if x.line == of.line and x.requester == of.requester:
            tree = MerkleTree.of(ENTRY_TYPES, [y.row() for y in entries])
            return int(row["idx"]), x, tree.proof(x.leaf())
    return None


async def _search(
    db: Database, of: Entry, look: int | None
) -> tuple[int, Entry, list[bytes]] | None:
    seen = 0
    while look is None or seen < look:
        page = LOOK_PAGE if look is None else min(LOOK_PAGE, look - seen)
        rows = await db.query(
            "SELECT idx, entries FROM settle_epochs ORDER BY idx DESC LIMIT ? OFFSET ?",
            (page, seen),
        )
        for row in rows:  # an epoch may hold 100 000 entries: read off the event loop
            if (found := await trio.to_thread.run_sync(_entry_in, row, of)) is not None:
                return found
        if len(rows) < page:
            return None
        seen += page
    return None


def _amount(x: Any) -> bool:
    return isinstance(x, str) and AMOUNT.fullmatch(x) is not None and int(x) < 2**256


class EpochHistory:
    """The final epochs this sentry built on: kept, served, and asked for."""

    def __init__(self, db: Database, net: MarketNet) -> None:
        self.db, self.net = db, net
        self._asked_at = -RETRY_S  # trio time of the last fruitless round
        self._told: int | None = None  # the missing epoch logged last

    def register(self) -> None:
        self.net.serve(PROTOCOL, self._serve, max_bytes=MAX_BYTES)

    async def record(self, index: int, epoch: Epoch) -> None:
        """Keeps final epoch ``index``'s entries, and for each of its lines that this is the
        last epoch that anchored it (see :func:`last_entry`)."""
        rows = [(e.job, e.task, e.worker, e.requester, index) for e in epoch.entries]

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO settle_epochs (idx, entries_root, entries) VALUES (?, ?, ?)",
                (index, epoch.entries_tree.root, pack(epoch.entries)),
            )
            c.executemany(NAME_LINE, rows)

        await self.db.transaction(write)

    def due(self) -> bool:
        """Whether a sentry that cannot rebuild an epoch asks again now (every ``RETRY_S``)."""
        return trio.current_time() >= self._asked_at + RETRY_S

    async def catch_up(
        self,
        follower: Follower,
        m: Anchoring,
        anchors: list[ChainAnchor],
        restore: Callable[[list[Entry]], Awaitable[object]] | None = None,
    ) -> list[tuple[int, Epoch]]:
        """:meth:`Follower.catch_up`, and when an epoch cannot be rebuilt from the entries
        heard, the entries asked for from the anchorers heard (every ``RETRY_S`` while none
        has them). Every epoch adopted is recorded, to serve in turn. ``restore``: gives the
        machine back the bases of lines it let go (:mod:`node.chain.line_bases`) that the
        entries asked for name."""
        adopted = follower.catch_up(m, anchors)
        roots = {a.index: a.entries_root for a in anchors}
        try:
            while follower.stuck is not None and self.due():
                missing = follower.stuck
                for index, entries in await self.fetch(follower.by_recency(), missing, roots):
                    follower.hear_epoch(index, roots[index], entries)
                    if restore is not None:
                        await restore(entries)
                more = follower.catch_up(m, anchors)
                adopted += more
                if not more:
                    self._asked_at = trio.current_time()
        finally:  # whatever went wrong after, an epoch adopted is recorded
            for index, epoch in adopted:
                await self.record(index, epoch)
        self._tell(follower)
        return adopted

    def _tell(self, follower: Follower) -> None:
        if follower.stuck == self._told:
            return
        if follower.stuck is None:
            log.info("anchoring: caught up with the chain's epochs", extra={"epoch": self._told})
        else:
            log.error("anchoring halted: an epoch on chain cannot be rebuilt from the entries "
                      "heard here, nor from the anchorers asked; asking again every "
                      f"{RETRY_S:.0f} s", extra={"epoch": follower.stuck,
                                                 "asked": len(follower.sources)})  # fmt: skip
        self._told = follower.stuck

    async def _serve(self, peer: str, payload: Any) -> Any:
        """Final epochs from ``from`` on, as many whole ones as fit in half an answer; or, when
        asked with ``part`` and epoch ``from`` is larger than that, that part of its entries
        (``parts`` tells how many there are). An asker that names no part is not given one: it
        would take a part for the whole epoch."""
        first = payload.get("from") if isinstance(payload, dict) else None
        part = payload.get("part", None) if isinstance(payload, dict) else None
        if type(first) is not int or not 0 <= first < 2**62:
            raise RequestRejected("malformed", "expected {from: epoch index}")
        if part is not None and (type(part) is not int or not 0 <= part < MAX_PARTS):
            raise RequestRejected("malformed", f"part: expected an int in 0..{MAX_PARTS - 1}")
        sizes = await self.db.query(
            "SELECT idx, length(entries) AS size FROM settle_epochs WHERE idx >= ? "
            "ORDER BY idx LIMIT 256",
            (first,),
        )
        large = bool(sizes) and sizes[0]["idx"] == first and sizes[0]["size"] > MAX_BYTES // 2
        if part is not None and (large or part > 0):
            return await self._part(first, part)
        last, total = -1, 0
        for r in sizes:
            total += int(r["size"])
            if total > MAX_BYTES // 2:
                break  # the rest next time: the asker goes on from where this ends
            last = r["idx"]
        if sizes and last < 0:
            raise RequestRejected("too_large", f"epoch {sizes[0]['idx']} is too large to serve "
                                  "whole: ask for it by part")  # fmt: skip
        rows = await self.db.query(
            "SELECT idx, entries_root, entries FROM settle_epochs WHERE idx >= ? AND idx <= ? "
            "ORDER BY idx",
            (first, last),
        )
        return {"epochs": [[r["idx"], r["entries_root"], r["entries"]] for r in rows]}

    async def _part(self, index: int, part: int) -> Any:
        rows = await self.db.query(
            "SELECT entries_root, entries FROM settle_epochs WHERE idx = ?", (index,)
        )
        if not rows:
            raise RequestRejected("not_found", f"epoch {index} is not kept here")
        entries = msgpack.unpackb(rows[0]["entries"])
        parts = max(1, -(-len(entries) // PART_ROWS))
        if part >= parts:
            raise RequestRejected("not_found", f"epoch {index} has {parts} part(s)")
        piece = msgpack.packb(entries[part * PART_ROWS : (part + 1) * PART_ROWS])
        return {"epochs": [[index, rows[0]["entries_root"], piece]], "part": part, "parts": parts}

    async def fetch(
        self, peers: list[str], missing: int, roots: dict[int, bytes]
    ) -> list[tuple[int, list[Entry]]]:
        """The epochs from ``missing`` on, each exactly as on chain (its entries give the
        chain's entries root), from the first of ``peers`` whose answer holds ``missing``.
        A peer that serves the chain's epoch with other entries, or malformed rows, is blamed;
        one that fails, or does not have it, is passed over."""
        for peer in peers:
            try:
                exact = _exact(await self._epochs_of(peer, missing), roots)
            except (RequestError, trio.TooSlowError) as exc:
                log.info("epoch history not fetched", extra={"peer": peer, "error": str(exc)})
                continue
            except Invalid as exc:
                self.net.blame(peer, f"epoch history: {exc}")
                continue
            if any(index == missing for index, _ in exact):
                return exact
        return []

    async def _epochs_of(self, peer: str, missing: int) -> Epochs:
        """What ``peer`` serves from epoch ``missing`` on; an epoch too large for one answer
        comes in parts, asked one after another from the same peer and joined.

        Raises:
            Invalid: a malformed answer, or parts that do not follow one another.
            RequestError: the peer failed to answer.
        """
        answer = await self._ask(peer, missing, 0)
        epochs = _parse(answer, missing)
        parts = answer.get("parts", 1)
        if parts == 1:
            return epochs
        if type(parts) is not int or not 1 < parts <= MAX_PARTS or len(epochs) != 1:
            raise Invalid("parts", f"expected one epoch in 2..{MAX_PARTS} parts")
        index, root, entries = epochs[0]
        for part in range(1, parts):
            more = await self._ask(peer, missing, part)
            got = _parse(more, missing)
            if (more.get("part"), more.get("parts")) != (part, parts) or [
                (i, r) for i, r, _ in got] != [(index, root)]:  # fmt: skip
                raise Invalid(f"part {part}", f"not part {part} of {parts} of epoch {index}")
            entries += got[0][2]
        return [(index, root, entries)]

    async def _ask(self, peer: str, first: int, part: int) -> Any:
        payload = {"from": first, "part": part}
        return await self.net.request(
            peer, [], PROTOCOL, payload, timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES
        )


def _exact(epochs: Epochs, roots: dict[int, bytes]) -> list[tuple[int, list[Entry]]]:
    """The served epochs the chain shows, each checked to give the chain's entries root.

    Raises:
        Invalid: one names the chain's root but its entries give another (a lie).
    """
    out = []
    for index, root, entries in epochs:
        if roots.get(index) != root:
            continue  # not one we follow (voided, or before our look)
        if MerkleTree.of(ENTRY_TYPES, [e.row() for e in entries]).root != root:
            raise Invalid(f"epochs[{index}]", "its entries do not give the chain's entries root")
        out.append((index, entries))
    return out


def _parse(answer: Any, first: int) -> Epochs:
    epochs = answer.get("epochs") if isinstance(answer, dict) else None
    if not isinstance(epochs, list):
        raise Invalid("epochs", "expected a list")
    out: Epochs = []
    for i, item in enumerate(epochs):
        if not (isinstance(item, list) and len(item) == 3 and type(item[0]) is int):
            raise Invalid(f"epochs[{i}]", "expected [index, entries root, rows]")
        if item[0] < first or not (isinstance(item[1], bytes) and len(item[1]) == 32):
            raise Invalid(f"epochs[{i}]", "index before the one asked for, or a bad root")
        out.append((item[0], item[1], unpack(item[2], f"epochs[{i}].rows")))
    return out
