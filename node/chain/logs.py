"""The contract's epoch events, scanned once and kept.

Every look along the epoch path (anchors, disputes, audits, ``settlement epochs``) asks for a
kind of event since the deployment (``chain.from_block``). Asked afresh each time, that is a
scan of the whole chain since then on every look: on Arbitrum One (about four blocks a second)
millions of blocks a month after deploying, which providers answer slowly or refuse outright
(many cap one ``eth_getLogs`` at a few thousand blocks, or its results). So the kinds the node
reads are scanned together, in spans of at most ``chain.log_span`` blocks (halved while the
endpoint refuses a span), and kept (on an rpc chain in the node database as well,
:mod:`node.chain.event_store`, so a restart goes on from its last save): a later look reads
only the blocks since, and the last ``REORG_DEPTH`` before them again, so a log a
reorganisation dropped or moved is replaced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from node.chain.event_store import EventStore, Saved, to_json

log = logging.getLogger(__name__)

# What the node reads; a contract's other events (one per deposit, stake, claim...) are many
# and never looked up, so they are not fetched.
EPOCH_EVENTS = (
    "Anchored", "Finalized", "Disputed", "Answered", "Voided", "SumDisputed", "SumAnswered",
    "LeavesShown", "EntriesShown", "EntriesPartShown",
)  # fmt: skip
# Blocks read again on each look (about a minute on Arbitrum, 50 on Ethereum): a reorganised
# block, or one a lagging node behind a load balancer had not yet served logs for, is read again.
REORG_DEPTH = 256
SAVE_EVERY = 10_000  # blocks: with no new event, the stored scan moves on this often
DEFAULT_SPAN = 10_000  # blocks per eth_getLogs: what the common providers answer


def range_refused(exc: BaseException) -> bool:
    """Whether the endpoint answered a request with an error (so a smaller range may pass):
    a JSON-RPC error, or an HTTP 400 or 413. A transport failure is not one: it would fail for
    any range, and halving through it would only delay the error."""
    if isinstance(exc, Web3RPCError):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code in (400, 413)
    return False


@dataclass
class LogScan:
    """Logs from block ``start`` on, kept in block order; :meth:`update` reads what is new.

    Args:
        fetch: the logs of blocks ``lo..hi`` (both included), in block order.
        start: the first block to read (the deployment's).
        span: the most blocks one fetch covers; halved while the endpoint refuses, doubled
            again (up to its first value) after each answer, since an error object can also
            mean a passing fault (a rate limit, a lagging node).
        depth: blocks before the last read that each update reads again.
        refused: whether a fetch's error means the range was too large for the endpoint.
    """

    fetch: Callable[[int, int], Sequence[Any]]
    start: int
    span: int = DEFAULT_SPAN
    depth: int = REORG_DEPTH
    refused: Callable[[BaseException], bool] = range_refused
    logs: list[Any] = field(default_factory=list)
    scanned: int = -1  # the last block read (-1: none yet)
    max_span: int = 0  # the first span (0: set from ``span``)

    def __post_init__(self) -> None:
        self.max_span = self.max_span or self.span

    def reading_from(self, head: int) -> int:
        """The first block an update to ``head`` reads (and drops what was kept from)."""
        if self.scanned < 0:
            return self.start
        # a head behind our last read (a reorg, a lagging node) reads back from there
        return max(self.start, min(self.scanned, head) + 1 - self.depth)

    def update(self, head: int) -> list[Any]:
        """Read up to block ``head`` and return every log kept.

        A failed fetch raises, and what was read before it is kept: the next update goes on
        from there.
        """
        lo = self.reading_from(head)
        self.logs = [entry for entry in self.logs if entry["blockNumber"] < lo]
        self.scanned = lo - 1
        while lo <= head:
            hi = min(head, lo + self.span - 1)
            try:
                got = self.fetch(lo, hi)
            except Exception as exc:
                if self.span == 1 or not self.refused(exc):
                    raise
                self.span //= 2
                log.info("eth_getLogs refused %d blocks; trying %d", hi - lo + 1, self.span,
                         extra={"error": str(exc)[:200]})  # fmt: skip
                continue
            self.logs.extend(got)
            self.scanned, lo = hi, hi + 1
            self.span = min(self.max_span, 2 * self.span)
        return self.logs


class ContractEvents:
    """The contract's :data:`EPOCH_EVENTS`, decoded; safe to share between threads (one scan at
    a time: a second caller waits for the first's read and uses it).

    Args:
        store: where the scan is kept between runs (an rpc chain's node database); None keeps
            it in memory only.
    """

    def __init__(self, w3: Web3, contract: Any, start: int, span: int = DEFAULT_SPAN,
                 store: EventStore | None = None) -> None:  # fmt: skip
        self.w3 = w3
        self.contract = contract
        self._by_topic = {
            HexBytes(getattr(contract.events, name).topic): getattr(contract.events, name)()
            for name in EPOCH_EVENTS
        }
        self.scan = LogScan(self._fetch, start, span)
        self._lock = threading.Lock()
        self._store = store
        self._raw: dict[tuple[int, int], str] = {}  # each kept log as read, for the store
        self._unsaved_from: int | None = None  # the store lacks what was read from here on
        self._changed = False  # a log read differs from what the store has
        self._saved_at = -1  # the last block the store says was scanned
        self._loaded = store is None

    def of(self, name: str, **where: Any) -> list[Any]:
        """The ``name`` events (one of :data:`EPOCH_EVENTS`) whose arguments equal ``where``'s.

        Raises:
            ValueError: ``name`` is not a kind this reads (our bug).
        """
        if name not in EPOCH_EVENTS:
            raise ValueError(f"event {name!r} is not one of {EPOCH_EVENTS}")
        with self._lock:
            if not self._loaded:
                self._load()
            latest = self.w3.eth.get_block("latest")
            head = int(latest["number"])
            since = self.scan.reading_from(head)
            if self._unsaved_from is None or since < self._unsaved_from:
                self._unsaved_from = since
            logs = list(self.scan.update(head))
            self._save(bytes(latest["hash"]))
        return [e for e in logs if e["event"] == name and _matches(e["args"], where)]

    def _load(self) -> None:
        """Take up the stored scan if the chain still has its last block with the same hash;
        otherwise scan afresh (and the first save replaces what was stored)."""
        assert self._store is not None
        saved = self._store.load()
        self._loaded = True
        if saved is None:
            return
        if saved.start != self.scan.start or not self._still_has(saved):
            log.info("stored events not used: chain.from_block changed, or the chain does not "
                     "have block %d as scanned; scanning again", saved.scanned)  # fmt: skip
            self._changed = True  # so the first scan replaces it
            return
        self.scan.logs = [self._decode(raw) for raw in saved.logs]
        self.scan.scanned = self._saved_at = saved.scanned
        self._changed = False

    def _still_has(self, saved: Saved) -> bool:
        try:
            block = self.w3.eth.get_block(saved.scanned)
        except BlockNotFound:
            return False
        return bytes(block["hash"]) == saved.scanned_hash

    def _save(self, head_hash: bytes) -> None:
        """Store what changed since the last save: only when a log did, or every
        ``SAVE_EVERY`` blocks (each save is a synced write, and looks come every few seconds)."""
        if self._store is None or self._unsaved_from is None:
            return
        kept = {(e["blockNumber"], e["logIndex"]) for e in self.scan.logs}
        if self._raw.keys() - kept:  # a reorganisation took some away
            self._raw = {key: raw for key, raw in self._raw.items() if key in kept}
            self._changed = True
        if not self._changed and self.scan.scanned < self._saved_at + SAVE_EVERY:
            return
        rows = [(block, index, raw) for (block, index), raw in sorted(self._raw.items())]
        self._store.save(self.scan.start, self._unsaved_from, rows, self.scan.scanned, head_hash)
        self._unsaved_from, self._changed, self._saved_at = None, False, self.scan.scanned

    def _fetch(self, lo: int, hi: int) -> list[Any]:
        raw = self.w3.eth.get_logs({
            "address": self.contract.address, "fromBlock": lo, "toBlock": hi,
            "topics": [[topic.to_0x_hex() for topic in self._by_topic]],
        })  # fmt: skip
        return [self._decode(entry) for entry in raw]

    def _decode(self, raw: Any) -> Any:
        if self._store is not None:
            key, text = (int(raw["blockNumber"]), int(raw["logIndex"])), to_json(raw)
            self._changed = self._changed or self._raw.get(key) != text
            self._raw[key] = text
        return self._by_topic[HexBytes(raw["topics"][0])].process_log(raw)


def _matches(args: Any, where: dict[str, Any]) -> bool:
    for key, want in where.items():
        have = args[key]
        if isinstance(want, str) and len(want) == 42 and want.startswith("0x"):  # an address
            if Web3.to_checksum_address(want) != Web3.to_checksum_address(have):
                return False
        elif have != want:
            return False
    return True
