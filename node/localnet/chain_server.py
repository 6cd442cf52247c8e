"""The embedded EVM (eth-tester over py-evm) as a JSON-RPC server on 127.0.0.1.

Used by ``idlegrid localnet`` where anvil is not installed: every node of the local network
talks to this one chain through the ordinary ``backend = "rpc"`` client, exactly as it would
talk to anvil or a real endpoint. Run as ``python -m node.localnet.chain_server --port P``.

Besides the standard ``eth_*`` methods (answered by web3's ``EthereumTesterProvider``), it
speaks the few development methods :class:`node.chain.backend.Chain` uses on anvil:
``anvil_setBalance`` (paid from the tester's prefunded account, since eth-tester cannot set a
balance) and ``evm_increaseTime`` / ``evm_mine`` (time travel). The chain lives in memory: it
is lost when the process stops, like the localnet it serves.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.middleware import combine_middleware
from web3.types import Wei

from node.chain.reverts import is_revert, revert_data

log = logging.getLogger(__name__)
REVERT_CODE = 3  # JSON-RPC error code for a revert carrying data (geth, anvil)
MAX_BODY = 8 * 2**20  # a contract deployment is ~30 KB; anything near this is not ours


class TesterRpc:
    """Answers JSON-RPC requests from one eth-tester chain, one request at a time.

    eth-tester is not thread-safe, so a lock serialises every call.
    """

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self.faucet = self.w3.eth.accounts[0]
        # The provider's own middleware turns eth-tester's Python shapes into JSON-RPC ones
        # (camelCase keys, defaults filled in); web3's result formatters run in the client.
        provider = self.w3.provider
        self._request = combine_middleware(
            middleware=tuple(provider._middleware),  # type: ignore[attr-defined]
            w3=self.w3,
            provider_request_fn=provider.make_request,
        )
        self._lock = threading.Lock()
        self._time_offset = 0
        self._skew = 0  # seconds the chain runs ahead of the wall clock after time travel

    def tick(self) -> None:
        """Mines a block at the wall clock's time (plus any travel), as anvil's --block-time
        does: contract windows (disputes, unbonding) pass with no transactions sent."""
        with self._lock:
            latest = int(self.w3.eth.get_block("latest")["timestamp"])
            target = max(latest + 1, int(time.time()) + self._skew)
            self.tester.time_travel(target + 1)  # py-evm lands one second before the target

    def handle(self, request: Any) -> Any:
        """One request object, or a batch (a list); returns the response in the same shape."""
        if isinstance(request, list):
            return [self._one(r) for r in request]
        return self._one(request)

    def _one(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "invalid request: an object with a method is expected")
        rid, method, params = request.get("id"), request["method"], request.get("params") or []
        with self._lock:
            try:
                result = self._call(method, params)
            except Exception as exc:  # one bad request must not stop the chain
                if is_revert(exc):  # as anvil and geth say it, so web3 raises the same error
                    data = HexBytes(revert_data(exc)).to_0x_hex()
                    error = {"code": REVERT_CODE, "message": "execution reverted", "data": data}
                    return {"jsonrpc": "2.0", "id": rid, "error": error}
                log.warning("rpc %s failed: %s", method, exc)
                return _error(rid, -32000, f"{method}: {exc}")
        if "error" in result:
            error = result["error"]
            return _error(rid, int(error.get("code", -32000)), str(error.get("message", error)))
        return {"jsonrpc": "2.0", "id": rid, "result": _plain(result.get("result"))}

    def _call(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "anvil_setBalance":
            return {"result": self._set_balance(params[0], int(params[1], 16))}
        if method == "evm_increaseTime":
            self._time_offset += int(params[0], 16) if isinstance(params[0], str) else params[0]
            return {"result": self._time_offset}
        if method == "evm_mine":
            now = int(self.w3.eth.get_block("latest")["timestamp"])
            # py-evm mines the travelled-to block one second early; ask one more to land on it.
            self.tester.time_travel(now + max(1, self._time_offset) + 1)
            self._time_offset = 0
            landed = int(self.w3.eth.get_block("latest")["timestamp"])
            self._skew = max(0, landed - int(time.time()))
            return {"result": "0x0"}
        return dict(self._request(method, params))

    def _set_balance(self, address: str, wei: int) -> bool:
        to = Web3.to_checksum_address(address)
        missing = wei - int(self.w3.eth.get_balance(to))
        if missing < 0:
            raise ValueError("the embedded chain can raise a balance, not lower it")
        if missing:
            tx = self.w3.eth.send_transaction(
                {"from": self.faucet, "to": to, "value": Wei(missing)}
            )
            self.w3.eth.wait_for_transaction_receipt(tx)
        return True


def _plain(value: Any) -> Any:
    """JSON-RPC form of a provider result: integers and bytes become 0x hex, mappings dicts."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return HexBytes(value).to_0x_hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def make_handler(rpc: TesterRpc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._reply(413, _error(None, -32600, f"body of {length} bytes"))
                return
            try:
                request = json.loads(self.rfile.read(length))
            except json.JSONDecodeError as exc:
                self._reply(400, _error(None, -32700, f"parse error: {exc}"))
                return
            self._reply(200, rpc.handle(request))

        def _reply(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def serve(host: str, port: int, block_time_s: float) -> None:
    """Serves until SIGTERM or SIGINT, mining a block every ``block_time_s`` (0: only with
    transactions)."""
    rpc = TesterRpc()
    server = ThreadingHTTPServer((host, port), make_handler(rpc))
    server.daemon_threads = True
    stopped = threading.Event()
    if block_time_s > 0:
        threading.Thread(target=_mine, args=(rpc, block_time_s, stopped), daemon=True).start()

    def stop(signum: int, frame: Any) -> None:
        stopped.set()
        threading.Thread(target=server.shutdown).start()  # shutdown() blocks until serve ends

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("embedded chain %d serving JSON-RPC on http://%s:%d", rpc.w3.eth.chain_id, host, port)
    server.serve_forever()
    server.server_close()
    log.info("embedded chain stopped")


def _mine(rpc: TesterRpc, every_s: float, stopped: threading.Event) -> None:
    while not stopped.wait(every_s):
        try:
            rpc.tick()
        except Exception:  # a failed tick must not stop the chain; the next one retries
            log.exception("mining a block failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--block-time", type=float, default=1.0, help="seconds between blocks")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost"):
        sys.exit(
            "chain_server: --host must be 127.0.0.1 or localhost (a dev chain is never exposed)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.host, args.port, args.block_time)


if __name__ == "__main__":
    main()
