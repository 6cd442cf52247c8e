"""The sealed bulk channel's framing on a real loopback TCP connection: frames of any size
arrive whole and in order however the bytes are cut, and a short, over-long or cut-off frame
breaks the channel with a reason. Also the chunk reply's frame, built without the general
encoder's copies."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from node.transfer.channel import READ_AHEAD, TAG_BYTES, SealedChannel
from node.transfer.wire import MAX_CHUNK_FRAME, chunk_reply_frame
from p2p.framing import (
    HEADER,
    FrameTooLarge,
    RequestError,
    StreamFailed,
    decode_body,
    encode_frame,
    frame_limits,
)

TIMEOUT_S = 10


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


async def test_frames_of_every_size_arrive_whole_and_in_order() -> None:
    key = os.urandom(32)
    # Small frames share a read-ahead; big ones span it and many receives.
    bodies = [os.urandom(n) for n in (0, 1, 5, READ_AHEAD - 3, READ_AHEAD * 3 + 7, 3 << 20, 9)]
    with trio.fail_after(TIMEOUT_S):
        async with tcp_pair() as (a, b), trio.open_nursery() as nursery:
            sender = SealedChannel(a, key, client=True)
            receiver = SealedChannel(b, key, client=False)

            async def send_all() -> None:
                for body in bodies:
                    await sender.send(encode_frame(body, 4 << 20))

            nursery.start_soon(send_all)
            for body in bodies:
                frame = await receiver.receive((4 << 20) + 64)
                assert frame == encode_frame(body, 4 << 20)[HEADER.size :]
            # and back the other way, on the same connection (the other direction's nonces)
            await receiver.send(encode_frame(b"reply", 64))
            assert await sender.receive(64) == encode_frame(b"reply", 64)[HEADER.size :]


async def test_a_frame_cut_off_by_the_peer_breaks_the_channel() -> None:
    async with tcp_pair() as (a, b):
        await a.send_all(HEADER.pack(1000) + b"x" * 300)
        await a.aclose()
        with trio.fail_after(TIMEOUT_S), pytest.raises(StreamFailed, match="closed"):
            await SealedChannel(b, os.urandom(32), client=False).receive(4096)


@pytest.mark.parametrize(
    ("length", "reason"), [(TAG_BYTES - 1, "shorter than its tag"), (1 << 20, "over 4096")]
)
async def test_a_frame_of_a_bad_length_is_refused_unread(length: int, reason: str) -> None:
    async with tcp_pair() as (a, b):
        await a.send_all(HEADER.pack(length))
        with trio.fail_after(TIMEOUT_S), pytest.raises(RequestError, match=reason):
            await SealedChannel(b, os.urandom(32), client=False).receive(4096)


async def test_a_frame_sealed_under_another_key_does_not_open() -> None:
    async with tcp_pair() as (a, b):
        await SealedChannel(a, os.urandom(32), client=True).send(encode_frame(b"hi", 64))
        with trio.fail_after(TIMEOUT_S), pytest.raises(RequestError, match="does not open"):
            await SealedChannel(b, os.urandom(32), client=False).receive(4096)


@pytest.mark.parametrize("payload", [b"", b"x" * 300, os.urandom(70_000)])
@pytest.mark.parametrize("index", [0, 127, 65_536, 2**32 - 1])
def test_a_chunk_reply_frame_decodes_as_the_map_it_stands_for(index: int, payload: bytes) -> None:
    frame = chunk_reply_frame(index, True, payload)
    assert decode_body(frame[HEADER.size :], frame_limits(MAX_CHUNK_FRAME)) == {
        "i": index, "z": True, "b": payload,
    }  # fmt: skip
    assert HEADER.unpack(frame[: HEADER.size]) == (len(frame) - HEADER.size,)


def test_a_chunk_reply_over_the_frame_limit_is_refused_before_sending() -> None:
    with pytest.raises(FrameTooLarge):
        chunk_reply_frame(1, False, bytes(MAX_CHUNK_FRAME))
