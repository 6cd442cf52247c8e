"""Opening a stream costs one round trip less: the multistream header and protocol go together.

py-libp2p's ``MultiselectClient`` writes the multistream header, waits for the listener's
echo, then writes the protocol it wants and waits again: two round trips before the first
byte of a request, on every stream we open (bids, orders, vouchers, challenges, blob
fetches). go-multistream's ``SelectProtoOrFail`` writes both lines at once and then reads
both answers; the listener reads its input line by line either way, so nothing changes on
its side. On 21 daemons sharing two cores, opening the order stream to a busy worker took up
to 1.8 s of a slow award: each round trip waits on two loaded event loops.

:func:`install` puts :class:`PipelinedClient` on a host; :func:`p2p.host.open_host` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from libp2p.abc import IHost, IMultiselectCommunicator
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    ProtocolNotSupportedError,
)
from libp2p.protocol_muxer.multiselect_client import (
    DEFAULT_NEGOTIATE_TIMEOUT,
    MULTISELECT_PROTOCOL_ID,
    PROTOCOL_NOT_FOUND_MSG,
    MultiselectClient,
    is_valid_handshake,
)
from libp2p.utils import encode_delim


class PipelinedClient(MultiselectClient):
    """Proposes the first protocol together with the header; falls back one by one."""

    async def select_one_of(
        self,
        protocols: Sequence[TProtocol],
        communicator: IMultiselectCommunicator,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> TProtocol:
        if not protocols:
            raise MultiselectClientError("no protocol to propose")
        with trio.move_on_after(negotiate_timeout):
            first = protocols[0]
            await _write_lines(communicator, MULTISELECT_PROTOCOL_ID, str(first))
            header = await _read_line(communicator)
            if not is_valid_handshake(header):
                raise MultiselectClientError(f"not a multistream listener: {header!r}")
            answer = await _read_line(communicator)
            if answer == str(first):
                return first
            if answer != PROTOCOL_NOT_FOUND_MSG:
                raise MultiselectClientError(f"unrecognized response to {first}: {answer!r}")
            for protocol in protocols[1:]:
                try:
                    return await self.try_select(communicator, protocol)
                except ProtocolNotSupportedError:
                    continue
            raise MultiselectClientError(f"protocols not supported: {list(map(str, protocols))}")
        raise MultiselectClientError(f"response timed out after {negotiate_timeout}s")


async def _write_lines(communicator: IMultiselectCommunicator, *lines: str) -> None:
    data = b"".join(encode_delim(line.encode()) for line in lines)
    try:
        await communicator.read_writer.write(data)  # type: ignore[attr-defined]
    except (IOException, AssertionError, ValueError) as error:  # as the library's write
        raise MultiselectClientError(f"handshake write failed: {error}") from error


async def _read_line(communicator: IMultiselectCommunicator) -> str:
    try:
        return await communicator.read()
    except MultiselectCommunicatorError as error:
        raise MultiselectClientError(f"handshake read failed: {error}") from error


def install(host: IHost) -> None:
    """Makes ``host`` pipeline the multistream header with each stream's protocol."""
    host.multiselect_client = PipelinedClient()  # type: ignore[attr-defined]
