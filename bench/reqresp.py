"""Request/response latency over libp2p against plain TCP, two hosts in one process.

Run: ``.venv/bin/python bench/reqresp.py [--rounds 200] [--payload 1024]``

Measures, on 127.0.0.1 and in the same run:

* ``reqresp``: :func:`p2p.reqresp.request`, a new stream per round trip;
* ``channel``: :func:`p2p.reqresp.open_channel`, one stream kept open;
* ``tcp``: the same framed payload echoed over one plain trio TCP connection (the baseline).

Ends with one ``RESULT`` line for scripts. Both ends share one process (and, on this machine,
two cores), so absolute numbers are pessimistic; the ratio is the number to watch.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2p.framing import HEADER
from p2p.host import open_host
from p2p.reqresp import open_channel, request, serve

PROTOCOL = "/idlegrid/bench/echo/1"
WARMUP = 20


async def echo(peer_id: str, payload: Any) -> Any:
    return payload


async def timed(rounds: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(WARMUP):
        await call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def tcp_echo_server(stream: trio.SocketStream) -> None:
    try:
        while True:
            (length,) = HEADER.unpack(await receive_exactly(stream, HEADER.size))
            await stream.send_all(HEADER.pack(length) + await receive_exactly(stream, length))
    except (EOFError, trio.BrokenResourceError):
        pass


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


async def measure_tcp(rounds: int, frame: bytes) -> list[float]:
    async with trio.open_nursery() as nursery:
        serve_tcp = functools.partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve_tcp, tcp_echo_server, 0)
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as client:

            async def round_trip() -> None:
                await client.send_all(frame)
                (length,) = HEADER.unpack(await receive_exactly(client, HEADER.size))
                await receive_exactly(client, length)

            samples = await timed(rounds, round_trip)
        nursery.cancel_scope.cancel()
    return samples


async def measure_libp2p(rounds: int, payload: bytes) -> tuple[list[float], list[float]]:
    async with open_host(bytes(range(32))) as client, open_host(bytes(range(1, 33))) as server:
        serve(server, PROTOCOL, echo)
        await client.connect(server.addrs[0])
        new_stream = await timed(rounds, lambda: request(client, server.peer_id, PROTOCOL, payload))
        async with open_channel(client, server.peer_id, PROTOCOL) as channel:
            kept_open = await timed(rounds, lambda: channel.request(payload))
    return new_stream, kept_open


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def main(rounds: int, payload_bytes: int) -> None:
    payload = bytes(payload_bytes)
    frame = HEADER.pack(len(payload)) + payload
    tcp = await measure_tcp(rounds, frame)
    new_stream, kept_open = await measure_libp2p(rounds, payload)
    print(f"{rounds} round trips of a {payload_bytes}-byte payload on 127.0.0.1 (ms)")
    print(f"{'mode':<22}{'p50':>8}{'p99':>8}{'mean':>8}")
    for name, samples in [
        ("reqresp (new stream)", new_stream),
        ("channel (kept open)", kept_open),
        ("plain trio TCP", tcp),
    ]:
        print(
            f"{name:<22}{percentile(samples, 50):>8.2f}{percentile(samples, 99):>8.2f}"
            f"{statistics.fmean(samples):>8.2f}"
        )
    reqresp_p50, tcp_p50 = percentile(new_stream, 50), percentile(tcp, 50)
    print(
        f"RESULT reqresp_p50_ms={reqresp_p50:.2f} reqresp_p99_ms={percentile(new_stream, 99):.2f}"
        f" tcp_p50_ms={tcp_p50:.3f} ratio_p50={reqresp_p50 / tcp_p50:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--payload", type=int, default=1024, help="payload size in bytes")
    args = parser.parse_args()
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # shutdown noise (notes, edge 6)
    trio.run(main, args.rounds, args.payload)
