"""Two networks whose nodes meet (a bootstrap list from the wrong network): they share no gossip
and hang up on each other, while a node of the right network joins as usual. Real nodes in this
test's trio loop, libp2p on 127.0.0.1, each with its own sqlite file."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.integration.test_hello_nodes import TIMEOUT_S, hello_heard, start
from tests.p2p.test_gate import eventually


async def test_nodes_of_two_networks_hang_up_on_each_other(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT_S):
            a = await start(nursery, tmp_path / "a", ("requester",))
            assert a.network is not None
            addr = (a.network.host.addrs[0],)
            b = await start(nursery, tmp_path / "b", ("requester",), addr, network="test")
            c = await start(nursery, tmp_path / "c", ("sentry",), addr)
            assert b.network is not None and c.network is not None
            a_net, b_net = a.network, b.network
            a_id, b_id = a.keys.peer_id, b.keys.peer_id

            assert await hello_heard(a_net, c.keys.peer_id) == ["sentry"]
            await eventually(lambda: b_id in a_net.foreign and a_id in b_net.foreign, TIMEOUT_S)
            assert (a_net.foreign[b_id], b_net.foreign[a_id]) == ("test", "main")
            await eventually(lambda: a_id not in b_net.host.connected_peers())

            # b will not redial a (nor remember it across a restart); a never heard of b.
            assert a_id not in b_net.book.peers
            assert await b.db.query("SELECT peer_id FROM peers") == []
            assert b_id not in a_net.book.peers
            assert a_net.gossip.topic_peers("/idlegrid/1/nodes") == {c.keys.peer_id}
            view = {p["peer_id"]: p for p in b_net.peers_view()}
            assert view[a_id]["other_network"] == "main"
        nursery.cancel_scope.cancel()
