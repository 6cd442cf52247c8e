"""p2p.reqresp between two real hosts on 127.0.0.1."""

from __future__ import annotations

import logging
import struct
from typing import Any

import msgpack
import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF

from p2p import reqresp
from p2p.framing import HEADER, IncompleteFrame, read_exactly
from p2p.host import Host
from p2p.reqresp import (
    FrameTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestRejected,
    RequestTimeout,
    StreamFailed,
    open_channel,
    request,
    serve,
)

PROTO = "/idlegrid/test/1"
TIMEOUT_S = 20


async def echo(peer_id: str, payload: Any) -> Any:
    return {"from": peer_id, "payload": payload}


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


async def raw_exchange(client: Host, server: Host, data: bytes) -> Any:
    """Write ``data`` as is, read one response frame (None if the server just closes)."""
    stream = await client.new_stream(server.peer_id, PROTO)
    await stream.write(data)
    try:
        (length,) = HEADER.unpack(await read_exactly(stream, HEADER.size))
        return msgpack.unpackb(await read_exactly(stream, length))
    except IncompleteFrame:
        return None
    finally:
        await stream.reset()


async def test_round_trip(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    with trio.fail_after(TIMEOUT_S):
        for payload in [None, 0, "x", b"\x00\xff", [1, [2, [3]]], {"k": {"n": -1}}]:
            response = await request(client, server.peer_id, PROTO, payload)
            assert response == {"from": client.peer_id, "payload": payload}


async def test_rejection_becomes_remote_error_with_its_code(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def refuse(peer_id: str, payload: Any) -> Any:
        raise RequestRejected("price_too_low", "ask at least 5 wei/s")

    serve(server, PROTO, refuse)
    with trio.fail_after(TIMEOUT_S), pytest.raises(RemoteError) as caught:
        await request(client, server.peer_id, PROTO, {"price": 1})
    assert (caught.value.code, caught.value.message) == ("price_too_low", "ask at least 5 wei/s")


async def test_handler_bug_is_internal_and_the_host_keeps_serving(
    pair: tuple[Host, Host], caplog: pytest.LogCaptureFixture
) -> None:
    client, server = pair

    async def buggy(peer_id: str, payload: Any) -> Any:
        if payload == "crash":
            raise ZeroDivisionError("our bug")
        return payload

    serve(server, PROTO, buggy)
    with trio.fail_after(TIMEOUT_S):
        with caplog.at_level(logging.ERROR, "p2p.reqresp"), pytest.raises(RemoteError) as caught:
            await request(client, server.peer_id, PROTO, "crash")
        assert caught.value.code == "internal"
        assert "our bug" not in caught.value.message  # our internals stay ours
        assert "ZeroDivisionError" in caplog.text
        assert await request(client, server.peer_id, PROTO, "fine") == "fine"


async def test_unencodable_response_is_internal(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def floaty(peer_id: str, payload: Any) -> Any:
        return 1.5  # floats are refused on the wire

    serve(server, PROTO, floaty)
    with trio.fail_after(TIMEOUT_S), pytest.raises(RemoteError, match="internal"):
        await request(client, server.peer_id, PROTO, "x")


async def test_timeout_when_the_handler_hangs(pair: tuple[Host, Host]) -> None:
    client, server = pair
    never = trio.Event()
    entered = trio.Event()

    async def hang(peer_id: str, payload: Any) -> Any:
        entered.set()
        await never.wait()

    serve(server, PROTO, hang)
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(RequestTimeout):
            await request(client, server.peer_id, PROTO, "x", timeout_s=0.3)
        assert entered.is_set()


async def test_server_cancels_a_handler_over_its_time(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def hang(peer_id: str, payload: Any) -> Any:
        await trio.Event().wait()

    serve(server, PROTO, hang, timeout_s=0.2)
    with trio.fail_after(TIMEOUT_S), pytest.raises(RemoteError) as caught:
        await request(client, server.peer_id, PROTO, "x")
    assert caught.value.code == "timeout"


async def test_oversized_request_is_refused_by_the_server(pair: tuple[Host, Host]) -> None:
    client, server = pair
    called = False

    async def record(peer_id: str, payload: Any) -> Any:
        nonlocal called
        called = True

    serve(server, PROTO, record, max_bytes=1024)
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(RemoteError) as caught:
            await request(client, server.peer_id, PROTO, b"x" * 300_000)
        assert caught.value.code == "too_large"
        assert not called
        with pytest.raises(RemoteError, match="too_large"):  # raw: only the header is sent
            await _request_raw_header(client, server, 1 << 30)


async def _request_raw_header(client: Host, server: Host, declared: int) -> None:
    response = await raw_exchange(client, server, HEADER.pack(declared))
    if isinstance(response, dict) and "err" in response:
        raise RemoteError(response["err"]["code"], response["err"]["message"])


async def test_oversized_request_is_not_sent(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    with trio.fail_after(TIMEOUT_S), pytest.raises(FrameTooLarge):
        await request(client, server.peer_id, PROTO, b"x" * 2048, max_bytes=1024)


async def test_oversized_response_is_refused_by_the_client(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    with trio.fail_after(TIMEOUT_S), pytest.raises(FrameTooLarge):
        await request(client, server.peer_id, PROTO, b"x" * 2048, max_bytes=2100)


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (frame(b"\xc1"), "malformed"),  # 0xc1 is never used in msgpack
        (frame(b"\x92\x01"), "malformed"),  # an array of 2 with 1 element
        (frame(msgpack.packb(1.5)), "malformed"),  # floats are refused
        (frame(msgpack.packb({1: 2})), "malformed"),  # non-str map key
        (frame(msgpack.packb(1) + b"\x00"), "malformed"),  # trailing bytes
        (b"GET / HTTP/1.1\r\n\r\n", "too_large"),  # "GET " read as a length
    ],
)
async def test_malformed_bytes_are_answered_and_the_server_survives(
    pair: tuple[Host, Host], garbage: bytes, code: str
) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    with trio.fail_after(TIMEOUT_S):
        response = await raw_exchange(client, server, garbage)
        assert response["err"]["code"] == code
        assert (await request(client, server.peer_id, PROTO, 1))["payload"] == 1


async def test_truncated_frame_is_dropped_and_the_server_survives(
    pair: tuple[Host, Host],
) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    with trio.fail_after(TIMEOUT_S):
        stream = await client.new_stream(server.peer_id, PROTO)
        await stream.write(struct.pack(">I", 100) + b"only ten b")
        await stream.close()  # end mid-frame: nothing to answer
        with pytest.raises(StreamEOF):
            await stream.read(1)
        assert (await request(client, server.peer_id, PROTO, 2))["payload"] == 2


async def test_payloads_over_64_kib_round_trip_intact(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    blob = bytes(range(256)) * 3000  # 768 KB: a dozen or more reads of at most 64 KiB
    with trio.fail_after(TIMEOUT_S):
        response = await request(client, server.peer_id, PROTO, blob)
    assert response["payload"] == blob


async def test_read_exactly_loops_over_short_reads() -> None:
    class Dribble:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, n: int | None = None) -> bytes:
            if not self.data:
                raise StreamEOF()
            chunk, self.data = self.data[:3], self.data[3:]
            return chunk

    assert await read_exactly(Dribble(b"0123456789"), 10) == b"0123456789"
    with pytest.raises(IncompleteFrame) as caught:
        await read_exactly(Dribble(b"01234"), 10)
    assert (caught.value.expected, caught.value.received) == (10, 5)
    assert isinstance(caught.value, ProtocolViolation)


async def test_response_must_be_ok_or_err(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def liar(stream: Any) -> None:
        await read_exactly(stream, 5)  # header + one-byte body
        await stream.write(frame(msgpack.packb({"maybe": 1})))
        await stream.close()

    server.set_stream_handler(PROTO, liar)
    with trio.fail_after(TIMEOUT_S), pytest.raises(ProtocolViolation):
        await request(client, server.peer_id, PROTO, 1)


async def test_closing_without_an_answer_is_a_stream_failure(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def mute(stream: Any) -> None:
        await read_exactly(stream, 5)
        await stream.close()

    server.set_stream_handler(PROTO, mute)
    with trio.fail_after(TIMEOUT_S), pytest.raises(StreamFailed, match="without answering"):
        await request(client, server.peer_id, PROTO, 1)


async def test_server_closes_an_idle_stream(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo, idle_timeout_s=0.1)
    with trio.fail_after(TIMEOUT_S):
        stream = await client.new_stream(server.peer_id, PROTO)
        with pytest.raises(StreamEOF):
            await stream.read(1)  # returns when the server gives up on us
        await stream.reset()


async def test_unsupported_protocol_and_unknown_peer_fail_the_stream(
    pair: tuple[Host, Host],
) -> None:
    client, server = pair
    stranger = "12D3KooWAcB6uoHuAPyfsYcwnYTqGNt2biPmSmvbBam9cwmawgzK"
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(StreamFailed):
            await request(client, server.peer_id, "/idlegrid/nobody/1", 1)
        with pytest.raises(StreamFailed):
            await request(client, stranger, PROTO, 1)


async def test_channel_carries_many_requests(pair: tuple[Host, Host]) -> None:
    client, server = pair
    streams_seen: set[int] = set()

    async def count(peer_id: str, payload: Any) -> Any:
        streams_seen.add(payload["stream"])
        if payload["n"] == 3:
            raise RequestRejected("three", "no threes")
        return payload["n"] * 2

    serve(server, PROTO, count)
    with trio.fail_after(TIMEOUT_S):
        async with open_channel(client, server.peer_id, PROTO) as channel:
            for n in range(6):
                if n == 3:
                    with pytest.raises(RemoteError, match="three"):
                        await channel.request({"stream": 1, "n": n})
                else:
                    assert await channel.request({"stream": 1, "n": n}) == n * 2
            assert not channel.broken  # a RemoteError leaves the channel in step


async def test_channel_breaks_on_timeout(pair: tuple[Host, Host]) -> None:
    client, server = pair

    async def maybe_hang(peer_id: str, payload: Any) -> Any:
        if payload == "hang":
            await trio.Event().wait()
        return payload

    serve(server, PROTO, maybe_hang)
    with trio.fail_after(TIMEOUT_S):
        async with open_channel(client, server.peer_id, PROTO) as channel:
            assert await channel.request("a") == "a"
            with pytest.raises(RequestTimeout):
                await channel.request("hang", timeout_s=0.3)
            assert channel.broken
            with pytest.raises(StreamFailed, match="broken"):
                await channel.request("b")
        assert await request(client, server.peer_id, PROTO, "c") == "c"


async def test_concurrent_channel_requests_queue(pair: tuple[Host, Host]) -> None:
    client, server = pair
    serve(server, PROTO, echo)
    results: dict[int, Any] = {}
    with trio.fail_after(TIMEOUT_S):
        async with open_channel(client, server.peer_id, PROTO) as channel:

            async def one(n: int) -> None:
                results[n] = (await channel.request(n))["payload"]

            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(one, n)
    assert results == {n: n for n in range(10)}


def test_public_names() -> None:
    for name in reqresp.__all__:
        assert hasattr(reqresp, name)
    assert issubclass(RequestTimeout, reqresp.RequestError)
