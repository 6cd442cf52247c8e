"""The lower bound on a worker's leaf (``net_floor``, the contract's ``_netFloor``): an honest
epoch never falls below it, whatever the amounts and the fee, so ``voidLowLeaf`` cannot void
one; a leaf a wei below it is found."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.settlement.audits import lowered, net_floor
from consensus.settlement.epoch import Entry, net_shares

WORKERS = [bytes([i]) * 20 for i in range(1, 6)]
R = b"\x09" * 20


@given(
    gross=st.dictionaries(st.sampled_from(WORKERS), st.integers(1, 10**24), min_size=1),
    fee_bps=st.integers(0, 1000),
)
def test_no_honest_share_is_below_the_floor(gross: dict[bytes, int], fee_bps: int) -> None:
    shares = net_shares(gross, fee_bps)
    assert all(shares[w] >= net_floor(g, fee_bps) for w, g in gross.items())


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
    w = WORKERS[0]
    floor = base[w] + net_floor(gross[w], fee_bps)
    assert lowered({**leaves, w: floor - 1}, base, entries, fee_bps) == [w]
    assert lowered({**leaves, w: floor}, base, entries, fee_bps) == []
