"""The event scan's bookkeeping (node/chain/logs.py) against a chain held in a dict: spans,
re-reading the last blocks, a head that goes back, refusals and failures. On a real endpoint
behind a provider's range cap: tests/chain/test_event_log.py."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from web3.exceptions import Web3RPCError

from node.chain.logs import LogScan, range_refused


class FakeChain:
    """One log per block, named by block and version; records the ranges fetched."""

    def __init__(self, blocks: int, cap: int = 10**9) -> None:
        self.version = dict.fromkeys(range(blocks), 0)
        self.calls: list[tuple[int, int]] = []
        self.cap = cap  # like a provider: a larger range is refused
        self.down_after: int | None = None  # fetches that pass before the endpoint goes down

    def fetch(self, lo: int, hi: int) -> list[dict[str, Any]]:
        self.calls.append((lo, hi))
        if self.down_after is not None and len(self.calls) > self.down_after:
            raise requests.ConnectionError("connection refused")
        if hi - lo + 1 > self.cap:
            raise Web3RPCError(f"block range too large, max {self.cap}")
        return [self.log(n) for n in range(lo, hi + 1) if n in self.version]

    def log(self, n: int) -> dict[str, Any]:
        return {"blockNumber": n, "name": f"{n}.{self.version[n]}"}

    def names(self, upto: int) -> list[str]:
        return [self.log(n)["name"] for n in sorted(self.version) if n <= upto]


def names(logs: list[Any]) -> list[str]:
    return [entry["name"] for entry in logs]


def test_the_first_scan_reads_in_spans_and_a_later_one_only_the_last_blocks() -> None:
    chain = FakeChain(13)
    scan = LogScan(chain.fetch, start=0, span=3, depth=2)
    assert names(scan.update(9)) == chain.names(9)
    assert chain.calls == [(0, 2), (3, 5), (6, 8), (9, 9)]
    chain.calls.clear()
    assert names(scan.update(12)) == chain.names(12)  # blocks 8 and 9 again, none twice
    assert chain.calls == [(8, 10), (11, 12)]


def test_nothing_before_the_start_is_read() -> None:
    chain = FakeChain(10)
    scan = LogScan(chain.fetch, start=5, span=100, depth=2)
    assert names(scan.update(9)) == chain.names(9)[5:]
    assert chain.calls == [(5, 9)]
    assert scan.update(4) == []  # a chain back before the start has none of them


def test_a_reorganised_block_within_the_depth_is_replaced() -> None:
    chain = FakeChain(10)
    scan = LogScan(chain.fetch, start=0, span=100, depth=3)
    scan.update(9)
    chain.version[8] = 1  # the block's log changed
    del chain.version[9]  # and the next one lost its log
    assert names(scan.update(9)) == chain.names(9)
    assert "8.1" in names(scan.logs) and "9.0" not in names(scan.logs)


def test_a_head_behind_our_last_read_drops_what_is_past_it() -> None:
    chain = FakeChain(12)
    scan = LogScan(chain.fetch, start=0, span=100, depth=2)
    scan.update(11)
    for n in (10, 11):  # a reorg to a shorter chain
        del chain.version[n]
    chain.version[9] = 1
    chain.calls.clear()
    assert names(scan.update(9)) == chain.names(9)
    assert chain.calls == [(8, 9)]


def test_a_refused_span_is_halved_until_the_endpoint_answers_and_grows_back() -> None:
    chain = FakeChain(40, cap=4)
    scan = LogScan(chain.fetch, start=0, span=10, depth=2)
    assert names(scan.update(19)) == chain.names(19)
    assert chain.calls[:3] == [(0, 9), (0, 4), (0, 1)]  # 10 and 5 refused
    refused = [c for c in chain.calls if c[1] - c[0] + 1 > 4]
    assert len(refused) <= len(chain.calls) - len(refused) + 2  # at most one per answer
    chain.cap, chain.calls = 10**9, []  # a passing fault (a rate limit, a lagging node) over
    scan.update(39)
    assert max(hi - lo + 1 for lo, hi in chain.calls) == 10  # back to the first span


def test_a_single_block_refused_is_an_error() -> None:
    chain = FakeChain(5, cap=0)
    with pytest.raises(Web3RPCError):
        LogScan(chain.fetch, start=0, span=4, depth=2).update(4)


def test_an_outage_raises_at_once_and_the_next_look_goes_on_from_what_was_read() -> None:
    chain = FakeChain(20)
    chain.down_after = 2
    scan = LogScan(chain.fetch, start=0, span=5, depth=2)
    with pytest.raises(requests.ConnectionError):
        scan.update(19)
    assert len(chain.calls) == 3 and scan.span == 5  # not halved: any range would fail
    assert scan.scanned == 9 and names(scan.logs) == chain.names(9)
    chain.down_after, chain.calls = None, []
    assert names(scan.update(19)) == chain.names(19)
    assert chain.calls[0] == (8, 12)


def test_which_errors_mean_the_range_was_too_large() -> None:
    def http(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(f"{status}", response=response)

    assert range_refused(Web3RPCError("query returned more than 10000 results"))
    assert range_refused(http(400)) and range_refused(http(413))
    assert not range_refused(http(502))
    assert not range_refused(requests.ConnectionError("refused"))
    assert not range_refused(requests.Timeout("slow"))
