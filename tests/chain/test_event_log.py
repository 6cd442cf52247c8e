"""The contract's events scanned once and kept (node/chain/logs.py), on anvil: behind a proxy
that refuses long eth_getLogs ranges the way providers do (a JSON-RPC error, or HTTP 400),
through a reorganisation (anvil's snapshot and revert), and kept in the node database across a
restart (node/chain/event_store.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from consensus.settlement.epoch import Entry, assemble
from node.chain import artifacts
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.event_store import EventStore
from node.chain.logs import REORG_DEPTH
from tests.chain.conftest import ETH, Anvil, Net, make_net

JOB = b"\x42" * 32
CAP = 8  # the most blocks the proxy's eth_getLogs answers


class CappingProxy:
    """An endpoint in front of anvil that refuses an eth_getLogs over ``CAP`` blocks as
    ``mode`` says ("json": an error object, as Infura and QuickNode answer; "http": status 400,
    as Alchemy does) and records the ranges it was asked."""

    def __init__(self, upstream: str, mode: str) -> None:
        self.upstream, self.mode = upstream, mode
        self.ranges: list[tuple[int, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, reply = proxy.answer(json.loads(body), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        if request["method"] == "eth_getLogs":
            params = request["params"][0]
            lo, hi = int(params["fromBlock"], 16), int(params["toBlock"], 16)
            self.ranges.append((lo, hi))
            if hi - lo + 1 > CAP:
                error = {"code": -32005, "message": f"block range too large, max {CAP}"}
                reply = {"jsonrpc": "2.0", "id": request["id"], "error": error}
                return (200 if self.mode == "json" else 400), json.dumps(reply).encode()
        upstream = requests.post(self.upstream, data=body, timeout=30,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
        return upstream.status_code, upstream.content


@contextmanager
def capping(upstream: str, mode: str = "json") -> Iterator[CappingProxy]:
    proxy = CappingProxy(upstream, mode)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(params=["json", "http"])
def proxy(request: pytest.FixtureRequest, anvil: Anvil) -> Iterator[CappingProxy]:
    with capping(anvil.url, request.param) as proxy:
        yield proxy


def post_anchor(net: Net) -> str:
    r, w = (bytes.fromhex(net.addr(x)[2:]) for x in ("requester", "worker"))
    epoch = assemble([Entry(r, w, JOB, JOB, ETH)], {}, {}, 100)
    result = net.client("sentry1").post_anchor(epoch, net.spends(ETH))
    assert result.tx_hash is not None
    return result.tx_hash


def rpc(net: Net, method: str, *params: Any) -> Any:
    return net.chain.w3.provider.make_request(method, list(params))["result"]  # type: ignore[attr-defined]


def funded(anvil: Anvil) -> Net:
    net = make_net(Chain.rpc(anvil.url, 31337))
    net.client("sentry1").stake(ETH)
    net.client("requester").fund(2 * ETH)
    return net


def test_a_provider_refusing_long_ranges_is_read_in_spans_it_answers(
    anvil: Anvil, proxy: CappingProxy
) -> None:
    net = funded(anvil)
    tx = post_anchor(net)
    rpc(net, "anvil_mine", hex(REORG_DEPTH + 100))
    capped = Settlement(Chain.rpc(proxy.url, 31337), artifacts.load(), net.address,
                        net.keys["other"], log_span=1000)  # fmt: skip
    [anchored] = capped.events("Anchored")
    assert "0x" + bytes(anchored["transactionHash"]).hex() == tx
    refused = [r for r in proxy.ranges if r[1] - r[0] + 1 > CAP]
    answered = len(proxy.ranges) - len(refused)
    assert refused, "the proxy refused nothing: the test shows nothing"
    assert len(refused) <= answered + 8, "each answer doubles the span: at most one refusal"
    assert capped.events("Voided", epoch=0) == []

    head = net.chain.w3.eth.block_number
    proxy.ranges.clear()
    rpc(net, "anvil_mine", hex(3))
    assert len(capped.events("Anchored", epoch=0)) == 1
    assert proxy.ranges and min(lo for lo, _ in proxy.ranges) >= head + 1 - REORG_DEPTH


def test_an_anchor_dropped_by_a_reorganisation_is_forgotten(anvil: Anvil) -> None:
    net = funded(anvil)
    reader = net.client("other")
    snapshot = rpc(net, "evm_snapshot")
    first = post_anchor(net)
    assert ["0x" + bytes(e["transactionHash"]).hex() for e in reader.events("Anchored")] == [first]
    assert rpc(net, "evm_revert", snapshot)
    assert reader.events("Anchored") == []
    second = post_anchor(net)
    assert ["0x" + bytes(e["transactionHash"]).hex() for e in reader.events("Anchored")] == [second]


def test_a_restart_reads_only_the_blocks_since_its_last_scan(anvil: Anvil, tmp_path: Path) -> None:
    net = funded(anvil)
    post_anchor(net)
    rpc(net, "anvil_mine", hex(REORG_DEPTH + 200))
    with capping(anvil.url) as proxy:

        def started(from_block: int = 0) -> Settlement:  # a node (or a wallet command)
            chain = Chain.rpc(proxy.url, 31337)
            return Settlement(chain, artifacts.load(), net.address, net.keys["other"],
                              from_block=from_block, log_span=CAP,
                              events_db=tmp_path / "node.db")  # fmt: skip

        first = started().events("Anchored")
        assert len(first) == 1 and min(lo for lo, _ in proxy.ranges) == 0
        head = net.chain.w3.eth.block_number
        rpc(net, "anvil_mine", hex(5))
        proxy.ranges.clear()
        assert started().events("Anchored") == first
        assert min(lo for lo, _ in proxy.ranges) >= head + 1 - REORG_DEPTH
        proxy.ranges.clear()  # another chain.from_block: scanned afresh from there
        assert started(from_block=1).events("Anchored") == first
        assert min(lo for lo, _ in proxy.ranges) == 1


def test_a_stored_scan_of_blocks_the_chain_no_longer_has_is_dropped(
    anvil: Anvil, tmp_path: Path
) -> None:
    """Another chain under the same id (a restarted anvil), or a reorg deeper than the blocks
    read again, would otherwise leave events that are not there."""
    net = funded(anvil)
    snapshot = rpc(net, "evm_snapshot")
    post_anchor(net)
    rpc(net, "anvil_mine", hex(REORG_DEPTH + 100))

    def started() -> Settlement:
        return Settlement(net.chain, artifacts.load(), net.address, net.keys["other"],
                          events_db=tmp_path / "node.db")  # fmt: skip

    assert len(started().events("Anchored")) == 1
    assert rpc(net, "evm_revert", snapshot)
    rpc(net, "anvil_mine", hex(REORG_DEPTH + 150))  # longer than before, without the anchor
    assert started().events("Anchored") == []


def _raw(block: int) -> str:
    hashes = {"blockHash": "0x" + "11" * 32, "transactionHash": "0x" + "22" * 32}
    return json.dumps({"blockNumber": block, "logIndex": 0, "data": "0x", "topics": [], **hashes})


def test_a_save_over_a_store_another_process_left_behind_writes_the_whole_scan(
    tmp_path: Path,
) -> None:
    """The daemon saves only what it read since its last save; if a wallet command meanwhile
    stored a scan from another start, or one that ends before that, the whole scan is written
    (not a tail over a hole)."""
    daemon = EventStore(tmp_path / "node.db", 31337, "0xC")
    command = EventStore(tmp_path / "node.db", 31337, "0xC")
    daemon.save(0, 0, [(5, 0, _raw(5))], scanned=10, scanned_hash=b"h")
    command.save(3, -1, [], scanned=4, scanned_hash=b"x")  # another chain.from_block
    daemon.save(0, 50, [(5, 0, _raw(5)), (60, 0, _raw(60))], scanned=70, scanned_hash=b"h2")
    saved = daemon.load()
    assert saved is not None and (saved.start, saved.scanned) == (0, 70)
    assert [log["blockNumber"] for log in saved.logs] == [5, 60]
    daemon.save(0, 60, [(5, 0, _raw(5)), (61, 0, _raw(61))], scanned=80, scanned_hash=b"h3")
    saved = daemon.load()  # in step: only the tail from 60 was replaced
    assert saved is not None and [log["blockNumber"] for log in saved.logs] == [5, 61]
    daemon.close()
    command.close()
