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
    from node.chain.follower import Follower
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
PROTOCOL = "/idlegrid/settle/epochs/1"
MAX_BYTES = 2 << 20  # an answer; an epoch of more entries than fit (about 15000) is not served
MAX_ROWS = 100_000
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
        await self.db.execute(
            "INSERT OR IGNORE INTO settle_epochs (idx, entries_root, entries) VALUES (?, ?, ?)",
            (index, epoch.entries_tree.root, pack(epoch.entries)),
        )

    def due(self) -> bool:
        """Whether a sentry that cannot rebuild an epoch asks again now (every ``RETRY_S``)."""
        return trio.current_time() >= self._asked_at + RETRY_S

    async def catch_up(
        self, follower: Follower, m: Anchoring, anchors: list[ChainAnchor]
    ) -> list[tuple[int, Epoch]]:
        """:meth:`Follower.catch_up`, and when an epoch cannot be rebuilt from the entries
        heard, the entries asked for from the anchorers heard (every ``RETRY_S`` while none
        has them). Every epoch adopted is recorded, to serve in turn."""
        adopted = follower.catch_up(m, anchors)
        roots = {a.index: a.entries_root for a in anchors}
        try:
            while follower.stuck is not None and self.due():
                missing = follower.stuck
                for index, entries in await self.fetch(follower.by_recency(), missing, roots):
                    follower.hear_epoch(index, roots[index], entries)
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
        first = payload.get("from") if isinstance(payload, dict) else None
        if type(first) is not int or not 0 <= first < 2**62:
            raise RequestRejected("malformed", "expected {from: epoch index}")
        sizes = await self.db.query(
            "SELECT idx, length(entries) AS size FROM settle_epochs WHERE idx >= ? "
            "ORDER BY idx LIMIT 256",
            (first,),
        )
        last, total = -1, 0
        for r in sizes:
            total += int(r["size"])
            if total > MAX_BYTES // 2:
                break  # the rest next time: the asker goes on from where this ends
            last = r["idx"]
        if sizes and last < 0:
            raise RequestRejected("too_large", f"epoch {sizes[0]['idx']} is too large to serve")
        rows = await self.db.query(
            "SELECT idx, entries_root, entries FROM settle_epochs WHERE idx >= ? AND idx <= ? "
            "ORDER BY idx",
            (first, last),
        )
        return {"epochs": [[r["idx"], r["entries_root"], r["entries"]] for r in rows]}

    async def fetch(
        self, peers: list[str], missing: int, roots: dict[int, bytes]
    ) -> list[tuple[int, list[Entry]]]:
        """The epochs from ``missing`` on, each exactly as on chain (its entries give the
        chain's entries root), from the first of ``peers`` whose answer holds ``missing``.
        A peer that serves the chain's epoch with other entries, or malformed rows, is blamed;
        one that fails, or does not have it, is passed over."""
        for peer in peers:
            try:
                answer = await self.net.request(
                    peer, [], PROTOCOL, {"from": missing}, timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES
                )
                exact = _exact(_parse(answer, missing), roots)
            except (RequestError, trio.TooSlowError) as exc:
                log.info("epoch history not fetched", extra={"peer": peer, "error": str(exc)})
                continue
            except Invalid as exc:
                self.net.blame(peer, f"epoch history: {exc}")
                continue
            if any(index == missing for index, _ in exact):
                return exact
        return []


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
