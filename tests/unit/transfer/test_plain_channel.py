"""The plain bulk channel on a real loopback TCP connection: frames of any size arrive whole
and in order, a file goes out as the frame it promises, a receive buffer is reused only once
it is handed back; and the chunk reply's payload is read in place, or not at all when the
frame is laid out otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
import trio

from node.transfer.channel import MIN_BUFFER, READ_AHEAD, PlainChannel
from node.transfer.wire import MAX_CHUNK_FRAME, chunk_reply_frame, split_chunk_reply
from p2p.framing import HEADER, StreamFailed, decode_body, encode_frame, frame_limits
from tests.unit.transfer.test_sealed_channel import tcp_pair

TIMEOUT_S = 10


async def test_frames_of_every_size_arrive_whole_and_in_order() -> None:
    bodies = [os.urandom(n) for n in (0, 1, 5, READ_AHEAD - 3, READ_AHEAD * 3 + 7, 3 << 20, 9)]
    with trio.fail_after(TIMEOUT_S):
        async with tcp_pair() as (a, b), trio.open_nursery() as nursery:
            sender, receiver = PlainChannel(a), PlainChannel(b)

            async def send_all() -> None:
                for body in bodies:
                    await sender.send(encode_frame(body, 4 << 20))

            nursery.start_soon(send_all)
            for body in bodies:
                got = await receiver.receive((4 << 20) + 64)
                assert bytes(got) == encode_frame(body, 4 << 20)[HEADER.size :]
                receiver.release(got)


async def test_a_file_goes_out_as_the_frame_its_head_promises(tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    (tmp_path / "blob").write_bytes(data)
    offset, count = 1000, (3 << 20) + 5
    head = HEADER.pack(4 + count) + b"head"
    with trio.fail_after(TIMEOUT_S):
        async with tcp_pair() as (a, b), trio.open_nursery() as nursery:
            fd = os.open(tmp_path / "blob", os.O_RDONLY)
            try:
                nursery.start_soon(PlainChannel(a).send_file, head, fd, offset, count)
                got = await PlainChannel(b).receive(8 << 20)
            finally:
                os.close(fd)
    assert bytes(got) == b"head" + data[offset : offset + count]


async def test_a_file_shorter_than_promised_fails_the_send(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"x" * 1000)
    fd = os.open(tmp_path / "blob", os.O_RDONLY)
    try:
        async with tcp_pair() as (a, _):
            with trio.fail_after(TIMEOUT_S), pytest.raises(OSError, match="short"):
                await PlainChannel(a).send_file(HEADER.pack(2000), fd, 0, 2000)
    finally:
        os.close(fd)


async def test_a_buffer_is_reused_only_once_it_is_handed_back() -> None:
    big = encode_frame(os.urandom(MIN_BUFFER), MIN_BUFFER + 64)
    with trio.fail_after(TIMEOUT_S):
        async with tcp_pair() as (a, b), trio.open_nursery() as nursery:
            sender, receiver = PlainChannel(a), PlainChannel(b)

            async def send_all() -> None:
                for frame in (big, big, big, encode_frame(b"small", 64), big):
                    await sender.send(frame)

            nursery.start_soon(send_all)
            first = await receiver.receive(MIN_BUFFER + 64)
            second = await receiver.receive(MIN_BUFFER + 64)
            assert first.obj is not second.obj  # type: ignore[union-attr]
            kept = bytes(first)
            receiver.release(second)
            third = await receiver.receive(MIN_BUFFER + 64)
            assert third.obj is second.obj  # type: ignore[union-attr]
            assert bytes(first) == kept, "a buffer still in use was written over"
            # a small frame (a request) takes no pooled buffer, and is not pooled
            small = await receiver.receive(64)
            receiver.release(small)
            receiver.release(third)
            assert (await receiver.receive(MIN_BUFFER + 64)).obj is third.obj  # type: ignore[union-attr]


async def test_a_cut_off_frame_breaks_the_channel() -> None:
    async with tcp_pair() as (a, b):
        await a.send_all(HEADER.pack(1000) + b"x" * 300)
        await a.aclose()
        with trio.fail_after(TIMEOUT_S), pytest.raises(StreamFailed, match="closed"):
            await PlainChannel(b).receive(4096)


@pytest.mark.parametrize("payload", [b"", b"x" * 300, os.urandom(70_000)])
@pytest.mark.parametrize("index", [0, 127, 128, 255, 256, 65_536, 2**32 - 1, 2**32])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_chunk_reply_is_split_as_it_decodes(index: int, compressed: bool, payload: bytes) -> None:
    body = chunk_reply_frame(index, compressed, payload)[HEADER.size :]
    split = split_chunk_reply(body)
    assert split is not None and isinstance(split["b"], memoryview)
    assert {**split, "b": bytes(split["b"])} == decode_body(body, frame_limits(MAX_CHUNK_FRAME))


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb({"i": 3, "e": "not_found"}),  # a refusal
        msgpack.packb({"i": 3, "z": False, "b": b"abc"}),  # bin 8, not bin 32
        msgpack.packb({"i": -1, "z": False, "b": b"x" * 70_000}),  # a negative index
        msgpack.packb({"z": False, "i": 3, "b": b"x" * 70_000}),  # other order
        chunk_reply_frame(3, False, b"x" * 1000)[HEADER.size : -1],  # shorter than it says
        chunk_reply_frame(3, False, b"x" * 1000)[HEADER.size :] + b"!",  # longer
        b"\x83\xa1i",
        b"",
    ],
)
def test_any_other_layout_is_left_to_the_decoder(body: bytes) -> None:
    assert split_chunk_reply(body) is None
