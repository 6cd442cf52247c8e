"""A reset stream's leftover wake-up event goes with Yamux's sweep (p2p.yamux_events).

py-libp2p 0.8.1 puts a fresh event back for a stream that a reset (or a last FIN) has just
removed, when a reader was waiting on it: a long-lived connection gained one per such
stream. Real hosts on 127.0.0.1.
"""

from __future__ import annotations

from contextlib import suppress

import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p.host import Host

PROTOCOL = "/idlegrid/test/echo/1"
RESETS = 5


def leftovers(conn: Yamux) -> set[int]:
    return set(conn.stream_events) - set(conn.streams)


async def test_a_reset_streams_event_goes_with_the_sweep_and_live_streams_keep_theirs(
    pair: tuple[Host, Host],
) -> None:
    client, server = pair
    conns: list[Yamux] = []
    served = trio.Semaphore(0)

    async def echo(stream: INetStream) -> None:
        """Says it is ready, then echoes until the client resets (waiting in a read)."""
        conns.append(stream.muxed_conn)  # type: ignore[arg-type]
        with suppress(StreamError):
            await stream.write(b"ready")
            while data := await stream.read():
                await stream.write(data)
        served.release()

    server.set_stream_handler(PROTOCOL, echo)
    with trio.fail_after(30):
        kept = await client.new_stream(server.peer_id, PROTOCOL)
        assert await kept.read() == b"ready"
        for _ in range(RESETS):
            stream = await client.new_stream(server.peer_id, PROTOCOL)
            assert await stream.read() == b"ready"
            await trio.testing.wait_all_tasks_blocked()  # the server waits in its read
            await stream.reset()
            await served.acquire()
        conn = conns[0]
        assert len(leftovers(conn)) == RESETS, "the library's leak (gone: drop the patch)"

        async with conn.streams_lock:  # as Yamux's own sweep every 30 s
            conn._sweep_stale_streams()
        assert leftovers(conn) == set()
        await kept.write(b"ping")
        assert await kept.read() == b"ping", "a live stream is untouched"
