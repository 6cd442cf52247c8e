"""An anchoring sentry that starts after the network's first anchors catches up from another
anchorer's epoch history (``/idlegrid/settle/epochs/1``), checks every epoch against the roots
on chain, and can then take over; a peer serving altered history is blamed and not followed.
Real EVM (embedded), one sqlite file per sentry; the request goes straight to the other
anchorer's handler."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from consensus.errors import Invalid
from consensus.market.messages import TaskRef
from consensus.settlement.epoch import Entry, assemble
from consensus.settlement.merkle import verify
from node.chain.anchorer import Anchorer
from node.chain.backend import Chain
from node.chain.history import MAX_BYTES, MAX_PARTS, PROTOCOL, EpochHistory, last_entry, unpack
from p2p.reqresp import RequestRejected
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_settlement_node import StubNet, fresh_anchorer, node_of, voucher

WINDOW_S = 3600
OTHER = TaskRef(job_id=b"\x08" * 16, task=0, attempt=0)


class Linked(StubNet):
    """Requests go to another anchorer's handler; a peer ``"tamper"`` adds a wei to the first
    entry of the first epoch it serves, one ``"empty"`` has nothing to serve."""

    def __init__(self, served: Anchorer) -> None:
        super().__init__()
        self.served = served
        self.blamed: list[str] = []
        self.asked: list[str] = []

    async def request(self, peer: str, addrs: Any, protocol: str, payload: Any,
                      **_: Any) -> Any:  # fmt: skip
        assert protocol == PROTOCOL
        self.asked.append(peer)
        answer = await self.served.history._serve(peer, payload)
        if peer == "empty":
            return {"epochs": []}
        if peer == "tamper":
            rows = msgpack.unpackb(answer["epochs"][0][2])
            rows[0][4] = str(int(rows[0][4]) + 1)
            answer["epochs"][0][2] = msgpack.packb(rows)
        return answer

    def blame(self, peer: str, reason: str) -> None:
        self.blamed.append(f"{peer}: {reason}")


async def two_final_epochs(net: Net, first: Anchorer) -> None:
    """The first anchorer alone: epoch 0 (line A 1 ETH), epoch 1 (A to 2 ETH, B 1 ETH)."""
    assert await first.on_voucher(voucher(net, first.chain.domain, ETH))
    await first.step()
    net.chain.advance(WINDOW_S + 1)
    assert await first.on_voucher(voucher(net, first.chain.domain, 2 * ETH))
    assert await first.on_voucher(voucher(net, first.chain.domain, ETH, ref=OTHER,
                                          worker="worker2"))  # fmt: skip
    await first.step()
    net.chain.advance(WINDOW_S + 1)
    await first.step()  # epoch 1 final (finalized: nothing new)
    assert net.client("other").anchor()["state"] == "final"


async def late(net: Net, db: Database, served: Anchorer, *sources: str) -> Anchorer:
    """A second anchorer starting now, that heard ``sources`` on gossip (the last latest)."""
    client = net.client("sentry2")
    anchorer = Anchorer(node_of(net, "sentry2", client), db, Linked(served))  # type: ignore[arg-type]
    await anchorer.chain.service.start()
    await anchorer.resume()
    for at, peer in enumerate(sources or ("first",)):  # their leaves came on gossip
        anchorer.follower.heard_from(peer, at)
    return anchorer


def funded() -> Net:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    for who in ("sentry1", "sentry2"):
        net.client(who).stake(ETH)
    return net


async def test_a_late_anchorer_catches_up_from_history_and_takes_over(tmp_path: Path) -> None:
    net = funded()
    c = net.client("other")
    async with await Database.open(tmp_path / "1.db") as db1, \
            await Database.open(tmp_path / "2.db") as db2:  # fmt: skip
        first = await fresh_anchorer(net, db1, net.client("sentry1"))
        await two_final_epochs(net, first)
        second = await late(net, db2, first, "first", "tamper", "empty")  # "empty" heard last
        await second.step()
        assert second.net.asked == ["empty", "tamper", "first"]  # type: ignore[attr-defined]
        assert second.machine is not None and first.machine is not None
        assert second.machine.index == 1 and second.follower.stuck is None
        assert second.machine.base_lines == first.machine.base_lines
        assert second.machine.base_earnings == first.machine.base_earnings
        rows = await db2.query("SELECT idx FROM settle_epochs ORDER BY idx")
        assert [r["idx"] for r in rows] == [0, 1], "kept, to serve in turn"
        # The first goes silent; the second anchors what grew after it, once it is its turn.
        assert await second.on_voucher(voucher(net, second.chain.domain, 3 * ETH))
        net.chain.advance(10)
        await second.step()
    assert (c.epoch_count(), c.anchor()["anchorer"]) == (3, net.addr("sentry2"))
    assert c.anchor()["total"] == ETH and c.pool_of(net.addr("requester"))["debited"] == 4 * ETH


async def test_altered_history_is_not_followed_and_its_server_is_blamed(tmp_path: Path) -> None:
    net = funded()
    async with await Database.open(tmp_path / "1.db") as db1, \
            await Database.open(tmp_path / "2.db") as db2:  # fmt: skip
        first = await fresh_anchorer(net, db1, net.client("sentry1"))
        await two_final_epochs(net, first)
        second = await late(net, db2, first, "tamper")
        await second.step()
        assert second.machine is not None
        assert second.machine.index == -1 and second.follower.stuck == 0
        assert (await second.status())["stopped_at_epoch"] == 0
        assert second.net.blamed == [  # type: ignore[attr-defined]
            "tamper: epoch history: invalid epochs[0]: its entries do not give the chain's "
            "entries root"
        ]
        assert await second.on_voucher(voucher(net, second.chain.domain, 3 * ETH))
        net.chain.advance(10)
        await second.step()
    assert net.client("other").epoch_count() == 2, "it posted without following"


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (b"\xc1", "malformed rows"),
        ([[b"r" * 20, b"w" * 20, b"j" * 32, b"t" * 31, "1"]], r"\[0\]"),  # a task of 31 bytes
        ([[b"r" * 20, b"w" * 20, b"j" * 32, b"t" * 32, "-1"]], r"\[0\]"),  # not a wei amount
        ([[b"r" * 20, b"w" * 20, b"j" * 32, b"t" * 32, "\u00b2"]], r"\[0\]"),  # a digit to isdigit
        ([[b"r" * 20, b"w" * 20, b"j" * 32, b"t" * 32, "9" * 78]], r"\[0\]"),  # over 2**256
        ([[b"r" * 20, b"w" * 20, b"j" * 32, b"t" * 32]], r"\[0\]"),  # no amount
        ({"rows": []}, r"\[0\]"),
    ],
)  # fmt: skip
def test_served_rows_are_checked_before_use(rows: Any, why: str) -> None:
    blob = rows if isinstance(rows, bytes) else msgpack.packb(rows)
    with pytest.raises(Invalid, match=why):
        unpack(blob, "epochs[0].rows")


async def test_a_history_request_must_name_an_epoch(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "1.db") as db:
        history = EpochHistory(db, StubNet())  # type: ignore[arg-type]
        for bad in ({}, {"from": -1}, {"from": "0"}, [0]):
            with pytest.raises(RequestRejected, match="from"):
                await history._serve("peer", bad)
        for part in (-1, "1", True, MAX_PARTS):
            with pytest.raises(RequestRejected, match="part"):
                await history._serve("peer", {"from": 0, "part": part})
        assert await history._serve("peer", {"from": 0}) == {"epochs": []}


class Served(StubNet):
    """Requests go straight to ``history``'s handler; ``alter(answer)`` may change an answer."""

    def __init__(self, history: EpochHistory, alter: Any = None) -> None:
        super().__init__()
        self.history, self.alter = history, alter
        self.blamed: list[str] = []
        self.sizes: list[int] = []

    async def request(self, peer: str, addrs: Any, protocol: str, payload: Any,
                      **_: Any) -> Any:  # fmt: skip
        answer = await self.history._serve(peer, payload)
        self.sizes.append(len(msgpack.packb(answer)))
        return self.alter(answer) if self.alter else answer

    def blame(self, peer: str, reason: str) -> None:
        self.blamed.append(f"{peer}: {reason}")


def big_epoch(n: int) -> Any:
    """An epoch of ``n`` entries (more than fit in one answer when n is over about 7700)."""
    entries = [Entry(bytes([i % 251]) * 20, (i // 251).to_bytes(20), i.to_bytes(32), bytes(32),
                     10**15 + i, 0) for i in range(n)]  # fmt: skip
    return assemble(entries, {}, {}, 100)


async def test_an_epoch_too_large_for_one_answer_is_served_in_parts(tmp_path: Path) -> None:
    epoch = big_epoch(16_000)  # 2.2 MB of rows: over MAX_BYTES, which once kept it unserved
    root = epoch.entries_tree.root
    async with await Database.open(tmp_path / "1.db") as db1, \
            await Database.open(tmp_path / "2.db") as db2:  # fmt: skip
        server = EpochHistory(db1, StubNet())  # type: ignore[arg-type]
        await server.record(0, epoch)
        await server.record(1, big_epoch(3))
        with pytest.raises(RequestRejected, match="too large to serve whole"):
            await server._serve("old", {"from": 0})  # an asker that knows no parts gets none
        net = Served(server)
        asker = EpochHistory(db2, net)  # type: ignore[arg-type]
        assert await asker.fetch(["peer"], 0, {0: root}) == [(0, list(epoch.entries))]
        assert len(net.sizes) == 3 and max(net.sizes) < MAX_BYTES  # 6000 + 6000 + 4000
        with pytest.raises(RequestRejected, match="has 3 part"):
            await server._serve("peer", {"from": 0, "part": 3})
        assert [i for i, _, _ in (await asker._epochs_of("peer", 1))] == [1]  # small: whole


def _tamper_part(answer: Any) -> Any:
    if answer.get("part") == 2:
        rows = msgpack.unpackb(answer["epochs"][0][2])
        rows[-1][4] = str(int(rows[-1][4]) + 1)
        answer["epochs"][0][2] = msgpack.packb(rows)
    return answer


def _renumber_part(answer: Any) -> Any:
    if answer.get("part") == 1:
        answer["part"] = 2
    return answer


@pytest.mark.parametrize(
    ("alter", "blame"),
    [
        (_tamper_part, "its entries do not give the chain's entries root"),
        (_renumber_part, "not part 1 of 3 of epoch 0"),
    ],
)
async def test_a_part_that_does_not_fit_its_epoch_is_blamed(
    tmp_path: Path, alter: Any, blame: str
) -> None:
    epoch = big_epoch(12_001)
    async with await Database.open(tmp_path / "1.db") as db1, \
            await Database.open(tmp_path / "2.db") as db2:  # fmt: skip
        server = EpochHistory(db1, StubNet())  # type: ignore[arg-type]
        await server.record(0, epoch)
        net = Served(server, alter)
        asker = EpochHistory(db2, net)  # type: ignore[arg-type]
        assert await asker.fetch(["peer"], 0, {0: epoch.entries_tree.root}) == []
        assert len(net.blamed) == 1 and blame in net.blamed[0], net.blamed


async def test_a_lines_last_entry_comes_from_the_epoch_that_last_anchored_it(
    tmp_path: Path,
) -> None:
    """What an anchorer answers a dispute of an entry's ``previous`` with: the line's entry
    in its latest final epoch, named by ``settle_lines``, or found by reading back through
    the epochs for a line anchored before that table was kept."""
    r, w, w2, job, task = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20, b"\x04" * 32, b"\x05" * 32
    line = Entry(r, w, job, task, 10)
    other = Entry(r, w2, job, task, 7)
    async with await Database.open(tmp_path / "sentry.db") as db:
        history = EpochHistory(db, StubNet())  # type: ignore[arg-type]
        first = assemble([line, other], {}, {}, 100)
        second = assemble([Entry(r, w, job, task, 30)], first.lines, first.earnings, 100)
        third = assemble([Entry(r, w2, job, task, 9)], second.lines, second.earnings, 100)
        for index, epoch in ((0, first), (1, second), (2, third)):
            await history.record(index, epoch)
        found = await last_entry(db, Entry(r, w, job, task, 50, previous=30))
        assert found is not None and (found[0], found[1].amount) == (1, 30)
        assert verify(second.entries_tree.root, found[1].leaf(), found[2])
        assert await last_entry(db, replace(line, requester=w2)) is None  # not its line
        await db.execute("DELETE FROM settle_lines")  # as if kept before the table was
        found = await last_entry(db, other)
        assert found is not None and (found[0], found[1].amount) == (2, 9)
        named = await db.query("SELECT worker, idx FROM settle_lines")
        assert [(bytes(x["worker"]), x["idx"]) for x in named] == [(w2, 2)]  # found: named
        assert await last_entry(db, other, look=1) is not None
        assert await last_entry(db, line, look=1) is None  # epoch 1 is two epochs back
        assert await last_entry(db, line, look=2) is not None
