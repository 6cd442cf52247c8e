"""The audits driven by the node's services on a real EVM (embedded), one sqlite file per node:
the anchoring sentry answers every sum dispute of its epoch (earnings over a base, debits, and
a demand for its leaves),
so an honest anchor survives any dispute; a requester's service disputes a debit above the
entries it heard, voids the anchor when its anchorer cannot show them, and disputes an entry it
never signed that an answer shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from consensus.envelope import new_nonce
from consensus.market.messages import TaskRef
from consensus.settlement.audits import DEBIT, EARNINGS, ENTRIES, answer
from consensus.settlement.eip712 import chain_job_id
from consensus.settlement.epoch import Entry, Epoch, assemble
from consensus.settlement.leaves import leaves_parts
from consensus.settlement.merkle import EARNINGS_TYPES, ENTRY_TYPES, MerkleTree
from consensus.settlement.messages import (
    MAX_LEAVES,
    EpochEntries,
    EpochLeaves,
    entries_parts,
    entry_of,
)
from consensus.settlement.shown import ShownEntries
from node.chain.anchorer import Anchorer
from node.chain.audit_calls import SumDispute
from node.chain.backend import Chain
from node.chain.disputer import Disputer
from storage.db import Database
from tests.chain.conftest import ETH, Net, make_net
from tests.chain.test_disputes import A, B, Hub, Requester
from tests.chain.test_epochs import FEE, J1, J2, J3, T0, entries, with_earnings
from tests.chain.test_settlement_node import fresh_anchorer, voucher

WINDOW = 3600  # the fixture's dispute (and answer) window


async def test_the_anchorer_answers_every_sum_dispute_of_its_epochs(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    other, req = net.client("other"), net.client("requester")
    other.stake(ETH)  # a bonded watcher may dispute earnings
    w = bytes.fromhex(net.addr("worker")[2:])
    async with await Database.open(tmp_path / "sentry.db") as db:
        a = await fresh_anchorer(net, db, net.client("sentry1"))
        for index, amount in enumerate((ETH, 3 * ETH)):  # epoch 1 grows the line over a base
            assert await a.on_voucher(voucher(net, a.chain.domain, amount))
            await a.step()
            assert a.machine is not None and a.machine.pending is not None
            epoch = a.machine.pending
            assert other.anchor()["epoch"] == index
            other.dispute_earnings(index, w, epoch.earnings[w], epoch.earnings_proof(w))
            req.dispute_debit(index)
            other.dispute_leaves(index)
            assert len(other.sum_disputes(index)) == 3
            await a.step()
            assert other.sum_disputes(index) == []
            shown = other.leaves_shown(index)
            assert shown is not None and dict(shown.rows()) == epoch.earnings
            net.chain.advance(WINDOW + 1)
            await a.step()
            assert other.anchor()["state"] == "final"
        assert a.sums.answered == 6
        assert [e.previous for e in epoch.entries] == [ETH]
        assert net.client("sentry1").stake_of()["bonded"] == ETH


async def test_the_requester_voids_an_anchor_that_debits_above_its_entries(
    tmp_path: Path,
) -> None:
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    cheat = net.client("sentry1")
    cheat.stake(ETH)
    r, w = (bytes.fromhex(net.addr(who)[2:]) for who in ("requester", "worker"))
    honest = assemble([entry_of(A, r, w, ETH)], {}, {}, FEE)  # the line is as signed
    padded = replace(honest, debits={r: 2 * ETH})  # its debit is not, though within the spend
    cheat.post_anchor(padded, net.spends(3 * ETH))
    async with await Database.open(tmp_path / "requester.db") as db:
        requester = Requester(net, db, tmp_path / "journal.db")
        await requester.vouched(A, "worker", ETH)
        disputer = await requester.start(Hub())
        await disputer.step()  # reads the anchor
        assert await gossip_entries(disputer, honest) == [1]
        await disputer.step()
        assert net.client("other").sum_disputes(0) == [], "disputed before half the window"
        net.chain.advance(WINDOW // 2 + 1)
        await disputer.step()
        (d,) = net.client("other").sum_disputes(0)
        assert d.amount == 2 * ETH
        await disputer.step()  # nothing new: disputed once
        assert len(net.client("other").sum_disputes(0)) == 1
        net.chain.advance(WINDOW + 1)
        before = requester.client.balance()
        await disputer.step()
        assert disputer.debits.voided == 1
        assert await disputer.findings() == []  # the entry itself was right
        assert net.client("other").anchor()["state"] == "void"
        pool = net.client("requester").pool_of()
        assert pool["balance"] == 10 * ETH and pool["debited"] == 0
        gained = requester.client.balance() - before
        assert ETH // 2 - gained < ETH // 100  # half the bond, less the void's gas


async def gossip_entries(disputer: Disputer, epoch: Epoch, index: int = 0) -> list[int]:
    """What the anchorer's gossip would bring the requester's service: each message's new
    entries."""
    heard = []
    for who, part, parts, rows in entries_parts(epoch, {}):
        heard.append(await disputer.hear(EpochEntries(
            expires_ms=2**40, nonce=new_nonce(), index=index, part=part, parts=parts,
            entries_root=epoch.entries_tree.root, requester=who, rows=rows)))  # fmt: skip
    return heard


def hand(to: Anchorer, index: int, epoch: Epoch, leaves: bool = True) -> None:
    """What the cheat's gossip would bring ``to``: the epoch's entries and (unless withheld)
    leaves."""
    for who, part, parts, rows in entries_parts(epoch, {}):
        to.follower.hear(EpochEntries(expires_ms=2**40, nonce=new_nonce(), index=index,
                                      part=part, parts=parts, requester=who, rows=rows,
                                      entries_root=epoch.entries_tree.root), "cheat")  # fmt: skip
    if not leaves:
        return
    for part, parts, workers, amounts in leaves_parts(epoch.earnings, MAX_LEAVES):
        to.auditor.hear_leaves(EpochLeaves(expires_ms=2**40, nonce=new_nonce(), index=index,
                                           earnings_root=epoch.earnings_tree.root, part=part,
                                           parts=parts, workers=workers, amounts=amounts),
                               "cheat")  # fmt: skip


def earnings_dispute(net: Net, worker: bytes) -> SumDispute:
    """The standby's dispute of ``worker``'s leaf, raised past half the window with its demand
    for the entries (not all were gossiped, or the follower kept one of two for a line)."""
    disputes = net.client("other").sum_disputes(1)
    assert sorted((d.kind, d.party) for d in disputes) == [(EARNINGS, worker), (ENTRIES, bytes(20))]
    return next(d for d in disputes if d.kind == EARNINGS)


@asynccontextmanager
async def followed_first_epoch(tmp: Path) -> AsyncIterator[tuple[Net, Anchorer, Epoch]]:
    """A cheat (a bare client) anchors epoch 0 honestly; a real anchorer stands by, follows it
    from the gossip, and records it in its history."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    for who in ("sentry1", "sentry2"):
        net.client(who).stake(ETH)
    async with await Database.open(tmp / "standby.db") as db:
        standby = await fresh_anchorer(net, db, net.client("sentry2"))
        first = assemble(entries(net, {(J1, T0, "worker"): ETH}), {}, {}, FEE)
        net.client("sentry1").post_anchor(first, net.spends(ETH))
        hand(standby, 0, first)
        await standby.step()
        assert standby.auditor.raised == 0  # an honest epoch: nothing to raise
        net.chain.advance(WINDOW + 1)
        await standby.step()
        assert standby.machine is not None and standby.machine.index == 0
        yield net, standby, first


async def test_a_standing_by_anchorer_voids_an_anchor_that_moves_earnings_between_workers(
    tmp_path: Path,
) -> None:
    """worker's 2 ETH credited to worker2, entries and leaves gossiped: worker's leaf is below
    its entries, so the standby voids at once (no dispute to wait on) and takes the reward.
    Raised leaves alone go through a dispute: the made-up requester and two-entries tests."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        w, w2 = (bytes.fromhex(net.addr(who)[2:]) for who in ("worker", "worker2"))
        lines = {(J1, T0, "worker"): ETH, (J2, T0, "worker"): 2 * ETH, (J3, T0, "worker2"): ETH}
        honest = assemble(entries(net, lines), first.lines, first.earnings, FEE)
        moved = {
            w: first.earnings[w],
            w2: honest.earnings[w2] + honest.earnings[w] - first.earnings[w],
        }
        tree = MerkleTree.of(EARNINGS_TYPES, [[k, v] for k, v in sorted(moved.items())])
        bad = replace(honest, earnings=moved, earnings_tree=tree)
        net.client("sentry1").post_anchor(bad, net.spends(4 * ETH))
        hand(standby, 1, bad)
        before = net.balance(net.addr("sentry2"))
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert net.client("other").sum_disputes(1) == []
        assert standby.auditor.raised == 1
        gained = net.balance(net.addr("sentry2")) - before
        assert ETH // 2 - gained < ETH // 100  # half the cheat's bond, less gas
        assert net.client("sentry1").stake_of()["bonded"] == 0


async def test_a_standing_by_anchorer_voids_an_anchor_that_counts_a_line_twice(
    tmp_path: Path,
) -> None:
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        # J1 grows to 2 ETH, but the entry says it had nothing before: 1 ETH counted twice.
        stale = assemble(entries(net, {(J1, T0, "worker"): 2 * ETH}), {}, first.earnings, FEE)
        net.client("sentry1").post_anchor(stale, net.spends(3 * ETH))
        hand(standby, 1, stale)
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 1


def post_made_up(net: Net, first: Epoch) -> Epoch:
    """The cheat posts epoch 1: worker 1 ETH from the requester, and worker2 2 ETH from
    requester X ("other"), which the anchor never debits; the epoch as its entries say."""
    x, w2 = (bytes.fromhex(net.addr(who)[2:]) for who in ("other", "worker2"))
    real = entries(net, {(J2, T0, "worker"): ETH})[0]
    epoch = assemble([real, Entry(x, w2, J3, T0, 2 * ETH)], first.lines, first.earnings, FEE)
    net.client("sentry1").post_anchor(replace(epoch, debits={real.requester: ETH}),
                                      net.spends(2 * ETH))  # fmt: skip
    return epoch


async def test_a_standing_by_anchorer_voids_an_anchor_that_pays_from_a_made_up_requester(
    tmp_path: Path,
) -> None:
    """The cheat credits worker2 with an entry of requester X (never debited), withholds X's
    entries and gossips the rest and the leaves. Past half the window the standby disputes
    worker2's leaf; the cheat's answer shows X's entry, which the standby then voids with."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        w2, epoch = bytes.fromhex(net.addr("worker2")[2:]), post_made_up(net, first)
        cheat = net.client("sentry1")
        hand(standby, 1, replace(epoch, entries=(epoch.entries[0],)))  # X's entry withheld
        await standby.step()
        assert net.client("other").sum_disputes(1) == [], "disputed before half the window"
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        d = earnings_dispute(net, w2)
        a = answer(epoch, first.earnings, d.kind, d.party)
        cheat.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 3  # the dispute and the demand, then the void


async def test_a_standing_by_anchorer_voids_undebited_entries_it_heard_in_full(
    tmp_path: Path,
) -> None:
    """The same made-up requester, its entries gossiped like the rest: the standby, with the
    whole tree heard, sees entries its debits do not cover and voids at once."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        hand(standby, 1, post_made_up(net, first))
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 1


async def test_a_standing_by_anchorer_voids_two_entries_for_one_line_shown_in_an_answer(
    tmp_path: Path,
) -> None:
    """The cheat counts one line twice in one epoch (the second entry with another
    ``previous``) and gossips both; the standby keeps one entry per line, so the worker's leaf
    looks inflated and is disputed past half the window, and the answer, which must show both
    entries, is what the standby voids with. The requester is not watching."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        w = bytes.fromhex(net.addr("worker")[2:])
        line, other = entries(net, {(J2, T0, "worker"): ETH, (J3, T0, "worker"): ETH - 1})
        again = replace(line, previous=1)  # adds ETH - 1 more, like ``other``
        tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in (line, again)])
        fair = assemble([line, other], first.lines, first.earnings, FEE)
        doubled = replace(fair, entries=(line, again), entries_tree=tree)
        net.client("sentry1").post_anchor(doubled, net.spends(3 * ETH))
        hand(standby, 1, doubled)
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        d = earnings_dispute(net, w)
        a = answer(doubled, first.earnings, d.kind, d.party)
        assert len(a.entries) == 2
        net.client("sentry1").answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 3  # the dispute and the demand, then the void


async def test_a_standing_by_anchorer_voids_an_anchor_that_pays_a_worker_less(
    tmp_path: Path,
) -> None:
    """The cheat pays worker half an ETH less than its entries add (entries and leaves
    gossiped): with every entry heard the standby voids the anchor at once."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        w = bytes.fromhex(net.addr("worker")[2:])
        lines = {(J1, T0, "worker"): 3 * ETH, (J2, T0, "worker2"): ETH}
        honest = assemble(entries(net, lines), first.lines, first.earnings, FEE)
        bad = with_earnings(honest, {**honest.earnings, w: honest.earnings[w] - ETH // 2})
        net.client("sentry1").post_anchor(bad, net.spends(4 * ETH))
        hand(standby, 1, bad)
        await standby.step()
        assert net.client("other").anchor()["state"] == "void"
        assert standby.auditor.raised == 1


async def test_the_requester_does_not_dispute_an_honest_debit_it_heard_no_entries_of(
    tmp_path: Path,
) -> None:
    """Gossip lost every copy (or the anchorer restarted as it posted): the debit is not
    covered by entries heard, but not beyond what the requester owes either."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    r, w = (bytes.fromhex(net.addr(who)[2:]) for who in ("requester", "worker"))
    net.client("sentry1").post_anchor(assemble([entry_of(A, r, w, ETH)], {}, {}, FEE),
                                      net.spends(ETH))  # fmt: skip
    async with await Database.open(tmp_path / "requester.db") as db:
        requester = Requester(net, db, tmp_path / "journal.db")
        await requester.vouched(A, "worker", ETH)
        disputer = await requester.start(Hub())
        await disputer.step()
        net.chain.advance(WINDOW // 2 + 1)
        await disputer.step()
        assert net.client("other").sum_disputes(0, answered=True) == []


async def test_the_requester_voids_an_anchor_with_two_entries_for_one_line(
    tmp_path: Path,
) -> None:
    """Each entry adds its amount over ``previous``: two for one line pay the voucher twice."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    net.client("sentry1").stake(ETH)
    r, w = (bytes.fromhex(net.addr(who)[2:]) for who in ("requester", "worker"))
    line = entry_of(A, r, w, ETH)
    twice = (line, replace(line, previous=1))
    epoch = assemble([line], {}, {}, FEE)
    tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in twice])
    doubled = replace(epoch, entries=twice, entries_tree=tree, debits={r: 2 * ETH - 1})
    net.client("sentry1").post_anchor(doubled, net.spends(2 * ETH))
    async with await Database.open(tmp_path / "requester.db") as db:
        requester = Requester(net, db, tmp_path / "journal.db")
        await requester.vouched(A, "worker", ETH)
        disputer = await requester.start(Hub())
        await disputer.step()  # reads the anchor
        assert await gossip_entries(disputer, doubled) == [2]
        await disputer.step()
        assert net.client("other").anchor()["state"] == "void"
        assert net.client("requester").pool_of()["debited"] == 0


async def test_the_requester_disputes_a_made_up_entry_shown_only_in_an_audit_answer(
    tmp_path: Path,
) -> None:
    """The anchorer debits us for an entry it made up and never gossiped, and answers our
    debit dispute by showing it: the answer is read, the entry disputed (no voucher of ours
    answers it) and the anchor voided. A line shown above our cap but within what we signed
    is not disputed: the anchorer may hold a voucher for it (none comes with an answer)."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    cheat = net.client("sentry1")
    cheat.stake(ETH)
    r, w = (bytes.fromhex(net.addr(who)[2:]) for who in ("requester", "worker"))
    capped = TaskRef(job_id=b"\x0c" * 16, task=2, attempt=0)
    lines = [entry_of(A, r, w, ETH), entry_of(B, r, w, ETH), entry_of(capped, r, w, 2 * ETH)]
    epoch = assemble(lines, {}, {}, FEE)
    cheat.post_anchor(epoch, net.spends(5 * ETH))
    async with await Database.open(tmp_path / "requester.db") as db:
        requester = Requester(net, db, tmp_path / "journal.db")
        await requester.vouched(A, "worker", ETH)  # B: never ours
        await requester.vouched(capped, "worker", 2 * ETH)
        await db.execute("UPDATE attempts SET payable_wei = ? WHERE job_id = ?",
                         (str(ETH), capped.job_id))  # fmt: skip
        disputer = await requester.start(Hub())
        await disputer.step()
        net.chain.advance(WINDOW // 2 + 1)
        await disputer.step()
        (d,) = cheat.sum_disputes(0)
        assert (d.kind, d.party, d.amount) == (DEBIT, r, epoch.debits[r])
        shown = answer(epoch, {}, DEBIT, r)
        cheat.answer_sum(d, (shown.base, shown.base_proof), shown.entries, shown.proof)
        await disputer.step()
        rows = await db.query("SELECT state, job FROM settle_disputes")
        made_up = chain_job_id(B.job_id)
        assert [(x["state"], bytes(x["job"])) for x in rows] == [("disputed", made_up)]
        assert len(disputer.heard) == 3
        [warned] = [f for f in await disputer.findings() if f.answerable]
        assert warned.entry.job == chain_job_id(capped.job_id)
        net.chain.advance(WINDOW + 1)
        await disputer.step()
        assert cheat.anchor()["state"] == "void"
        assert net.client("requester").pool_of()["debited"] == 0


async def test_a_standing_by_anchorer_voids_two_entries_for_one_line_in_two_shown_parts(
    tmp_path: Path,
) -> None:
    """The same line counted twice, gossiped (the standby keeps one entry per line, so the
    entries do not add up to their root) and demanded: the cheat shows them a part each, so
    no one part holds both, and the standby voids with the whole set shown, at once."""
    async with followed_first_epoch(tmp_path) as (net, standby, first):
        line, other = entries(net, {(J2, T0, "worker"): ETH, (J3, T0, "worker"): ETH - 1})
        again = replace(line, previous=1)
        tree = MerkleTree.of(ENTRY_TYPES, [e.row() for e in (line, again)])
        fair = assemble([line, other], first.lines, first.earnings, FEE)
        doubled = replace(fair, entries=(line, again), entries_tree=tree)
        cheat = net.client("sentry1")
        cheat.post_anchor(doubled, net.spends(3 * ETH))
        hand(standby, 1, doubled)
        await standby.step()
        net.chain.advance(WINDOW // 2 + 1)
        await standby.step()
        assert ENTRIES in {d.kind for d in cheat.sum_disputes(1)}
        shown = ShownEntries.of_rows(doubled.entries, per_part=1)
        assert [len(p) for p in shown.parts] == [1, 1]
        for j in range(2):
            cheat.answer_entries(1, shown, j)
        await standby.step()
        assert cheat.anchor()["state"] == "void"  # no answer time waited out


async def test_the_requester_disputes_a_made_up_entry_shown_on_an_entries_demand(
    tmp_path: Path,
) -> None:
    """The anchorer debits us for an entry it made up and gossips none; a bonded watcher
    demands the entries, and the anchorer shows them, a part each: the requester reads the
    parts as it reads answers, and disputes the made-up one within the first half window."""
    net = make_net(Chain.embedded())
    net.client("requester").fund(10 * ETH)
    cheat, watcher = net.client("sentry1"), net.client("sentry2")
    for bonded in (cheat, watcher):
        bonded.stake(ETH)
    r, w = (bytes.fromhex(net.addr(who)[2:]) for who in ("requester", "worker"))
    epoch = assemble([entry_of(A, r, w, ETH), entry_of(B, r, w, ETH)], {}, {}, FEE)
    cheat.post_anchor(epoch, net.spends(2 * ETH))
    async with await Database.open(tmp_path / "requester.db") as db:
        requester = Requester(net, db, tmp_path / "journal.db")
        await requester.vouched(A, "worker", ETH)  # B: never ours
        disputer = await requester.start(Hub())
        await disputer.step()
        watcher.dispute_entries(0)
        shown = ShownEntries.of_rows(epoch.entries, per_part=1)
        for j in range(len(shown.nodes)):
            cheat.answer_entries(0, shown, j)
        await disputer.step()
        rows = await db.query("SELECT state, job FROM settle_disputes")
        assert [(x["state"], bytes(x["job"])) for x in rows] == [
            ("disputed", chain_job_id(B.job_id))
        ]
        assert {d.kind for d in cheat.sum_disputes(0, answered=True)} == {ENTRIES}  # no debit one
