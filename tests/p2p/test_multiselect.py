"""Stream opening pipelines the multistream header with the protocol (p2p/multiselect.py)."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.utils import encode_delim

from p2p.host import DialError, open_host
from p2p.multiselect import PipelinedClient

HEADER = "/multistream/1.0.0"


class ScriptedListener:
    """A communicator that answers from a script and records what the client did, in order."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.log = list(answers), []
        self.read_writer = self

    async def write(self, data: bytes | str) -> None:  # raw bytes, or one line (library)
        self.log.append(("write", data if isinstance(data, bytes) else encode_delim(data.encode())))

    async def read(self) -> str:
        self.log.append(("read", b""))
        return self.answers.pop(0)


async def test_header_and_protocol_go_out_before_the_first_answer() -> None:
    wanted = TProtocol("/idlegrid/test/1")
    listener = ScriptedListener([HEADER, str(wanted)])
    assert await PipelinedClient().select_one_of([wanted], listener) == wanted  # type: ignore[arg-type]
    sent = encode_delim(HEADER.encode()) + encode_delim(str(wanted).encode())
    assert listener.log == [("write", sent), ("read", b""), ("read", b"")]
    # The library's client waits for the header's echo first: one round trip more.
    library = ScriptedListener([HEADER, str(wanted)])
    await MultiselectClient().select_one_of([wanted], library)  # type: ignore[arg-type]
    assert [op for op, _ in library.log] == ["write", "read", "write", "read"]


async def test_a_refused_first_protocol_falls_back_to_the_next() -> None:
    first, second = TProtocol("/a/2"), TProtocol("/a/1")
    listener = ScriptedListener([HEADER, "na", str(second)])
    assert await PipelinedClient().select_one_of([first, second], listener) == second  # type: ignore[arg-type]


@pytest.mark.parametrize("answers", [["/not-multistream"], [HEADER, "/something/else"]])
async def test_a_listener_out_of_step_is_an_error(answers: list[str]) -> None:
    with pytest.raises(MultiselectClientError):
        await PipelinedClient().select_one_of([TProtocol("/a/1")], ScriptedListener(answers))  # type: ignore[arg-type]


async def test_real_hosts_open_streams_and_refuse_unknown_protocols() -> None:
    async def echo(stream: INetStream) -> None:
        await stream.write(await stream.read(5))
        await stream.close()

    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_host(os.urandom(32)))
        b = await stack.enter_async_context(open_host(os.urandom(32)))
        assert isinstance(a.libp2p.multiselect_client, PipelinedClient)
        b.set_stream_handler("/test/echo/1", echo)
        await a.connect(b.addrs[0])
        with trio.fail_after(10):
            for _ in range(3):  # several streams on one connection, each negotiated afresh
                stream = await a.new_stream(b.peer_id, "/test/echo/1")
                await stream.write(b"hello")
                assert await stream.read(5) == b"hello"
                await stream.close()
            with pytest.raises(DialError):
                await a.new_stream(b.peer_id, "/test/nobody-serves-this/1")
