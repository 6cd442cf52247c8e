"""Yamux window updates once half the window is read (p2p.yamux_window), between real hosts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from p2p.host import Host, open_host

PROTOCOL = "/idlegrid/test/bulk/1"


@asynccontextmanager
async def receiving(total: int) -> AsyncIterator[tuple[Host, INetStream, trio.Event]]:
    """A stream from one host to another that reads everything it is sent, in small reads."""
    async with open_host(os.urandom(32)) as sender, open_host(os.urandom(32)) as receiver:
        done, got = trio.Event(), [0]

        async def read_all(stream: INetStream) -> None:
            with suppress(StreamEOF):  # the sender closed: all read
                while got[0] < total:
                    got[0] += len(await stream.read(600))
            if got[0] == total:
                done.set()

        receiver.set_stream_handler(PROTOCOL, read_all)
        await sender.connect(receiver.addrs[0])
        yield sender, await sender.new_stream(receiver.peer_id, PROTOCOL), done


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    real = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, *args: Any, **kwargs: Any) -> None:
        sent.append(increment)
        await real(self, increment, *args, **kwargs)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    return sent


async def test_small_messages_cost_no_window_update(updates: list[int]) -> None:
    """py-libp2p sent one on nearly every read: 704 for 200 gossip messages."""
    messages = 200
    async with receiving(messages * 500) as (_, stream, done):
        with trio.fail_after(10):
            for _ in range(messages):
                await stream.write(os.urandom(500))  # 100 kB: under half the window
            await stream.close()
            await done.wait()
    assert updates == []


async def test_a_bulk_sender_is_never_stalled(updates: list[int]) -> None:
    size = 8 * DEFAULT_WINDOW_SIZE
    async with receiving(size) as (_, stream, done):
        with trio.fail_after(30):
            for _ in range(size // 65536):
                await stream.write(os.urandom(65536))
            await stream.close()
            await done.wait()
    assert 1 <= len(updates) <= 2 * size // DEFAULT_WINDOW_SIZE
    assert min(updates) >= DEFAULT_WINDOW_SIZE // 2
