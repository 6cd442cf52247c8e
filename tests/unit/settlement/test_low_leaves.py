"""The bounds on a worker's leaf (``net_floor`` and ``net_ceil``, the contract's ``_netFloor``
and ``_netCeil``): an honest epoch's shares lie between them, whatever the amounts and the fee,
so ``voidLowLeaf`` cannot void one and its anchorer can answer any earnings dispute; a leaf a
wei outside is found. An honest epoch leaves no worker out (``voidMissingLeaf``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.settlement.audits import inflated, left_out, lowered, net_ceil, net_floor
from consensus.settlement.epoch import Entry, assemble, net_shares

WORKERS = [bytes([i]) * 20 for i in range(1, 6)]
R = b"\x09" * 20


@given(
    gross=st.dictionaries(st.sampled_from(WORKERS), st.integers(1, 10**24), min_size=1),
    fee_bps=st.integers(0, 1000),
)
def test_every_honest_share_is_within_the_bounds(gross: dict[bytes, int], fee_bps: int) -> None:
    shares = net_shares(gross, fee_bps)
    assert all(net_floor(g, fee_bps) <= shares[w] <= net_ceil(g, fee_bps) for w, g in gross.items())


@given(
    amounts=st.lists(st.integers(1, 10**21), min_size=1, max_size=5), fee_bps=st.integers(0, 1000)
)
def test_an_honest_epoch_has_no_low_leaf_and_one_wei_less_is_found(
    amounts: list[int], fee_bps: int
) -> None:
    entries = [Entry(R, WORKERS[i % 2], bytes([i]) * 32, bytes(32), a, 0)
               for i, a in enumerate(amounts)]  # fmt: skip
    gross: dict[bytes, int] = {}
    for e in entries:
        gross[e.worker] = gross.get(e.worker, 0) + e.added
    base = {WORKERS[0]: 7}
    leaves = {w: base.get(w, 0) + share for w, share in net_shares(gross, fee_bps).items()}
    assert lowered(leaves, base, entries, fee_bps) == []
    assert inflated(leaves, base, entries, fee_bps) == []
    top = base[WORKERS[0]] + net_ceil(gross[WORKERS[0]], fee_bps)
    assert inflated({**leaves, WORKERS[0]: top + 1}, base, entries, fee_bps) == [WORKERS[0]]
    w = WORKERS[0]
    floor = base[w] + net_floor(gross[w], fee_bps)
    assert lowered({**leaves, w: floor - 1}, base, entries, fee_bps) == [w]
    assert lowered({**leaves, w: floor}, base, entries, fee_bps) == []


@given(
    amounts=st.lists(st.integers(1, 10**21), min_size=1, max_size=5),
    base=st.dictionaries(st.sampled_from(WORKERS), st.integers(1, 10**21), max_size=3),
    fee_bps=st.integers(0, 1000),
    drop=st.sampled_from(WORKERS),
)
def test_an_honest_epoch_leaves_no_worker_out_and_one_dropped_is_found(
    amounts: list[int], base: dict[bytes, int], fee_bps: int, drop: bytes
) -> None:
    entries = [Entry(R, WORKERS[i % 3], bytes([i]) * 32, bytes(32), a, 0)
               for i, a in enumerate(amounts)]  # fmt: skip
    epoch = assemble(entries, {}, base, fee_bps)
    assert left_out(epoch.earnings, base, entries, fee_bps) == []
    owed = drop in base or net_floor(sum(e.added for e in entries if e.worker == drop), fee_bps) > 0
    without = {w: a for w, a in epoch.earnings.items() if w != drop}
    assert left_out(without, base, entries, fee_bps) == ([drop] if owed else [])


def test_a_leaf_cut_below_its_base_without_entries_is_found() -> None:
    """An idle worker (no entries this epoch) keeps its leaf; one cut to a wei is lowered."""
    idle, busy = WORKERS[3], WORKERS[0]
    entries = [Entry(R, busy, b"\x01" * 32, bytes(32), 10**18, 0)]
    base = {idle: 5 * 10**17}
    assert lowered({idle: 5 * 10**17, busy: 10**18 - 10**16}, base, entries, 100) == []
    assert lowered({idle: 1, busy: 10**18 - 10**16}, base, entries, 100) == [idle]
