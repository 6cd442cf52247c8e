"""``payout``: one transaction pays many workers their final earnings, on a real EVM."""

from __future__ import annotations

import pytest

from consensus.settlement.eip712 import split_fee
from consensus.settlement.epoch import Entry, Epoch, assemble
from consensus.settlement.leaves import PayoutBatch, payout_batches
from tests.chain.conftest import ETH, Net
from tests.chain.test_epochs import FEE, J1, J2, J3, T0, WINDOW, b, reverts

ONE_BATCH = pytest.mark.parametrize("net", ["embedded", "token"], indirect=True)
EMBEDDED = pytest.mark.parametrize("net", ["embedded"], indirect=True)


def final_epoch(
    net: Net, amounts: dict[bytes, int], prior: dict[bytes, int] | None = None
) -> Epoch:
    """Anchors one requester's entries (one job per worker) and lets the epoch become final."""
    req, anchorer = net.client("requester"), net.client("sentry1")
    req.fund(10 * ETH)
    anchorer.stake(ETH)
    r, jobs = b(net, "requester"), (J1, J2, J3)
    lines = [Entry(r, w, jobs[i], T0, a) for i, (w, a) in enumerate(amounts.items())]
    epoch = assemble(lines, {}, prior or {}, FEE)
    anchorer.post_anchor(epoch, net.spends(10 * ETH))
    net.chain.advance(WINDOW)
    anchorer.finalize(0)
    return epoch


def batch(epoch: Epoch, *workers: bytes) -> PayoutBatch:
    [only] = payout_batches(epoch.earnings_tree, epoch.earnings, list(workers))
    return only


@ONE_BATCH
def test_one_transaction_pays_several_workers_once(net: Net) -> None:
    w1, w2, w3 = b(net, "worker"), b(net, "worker2"), b(net, "other")
    epoch = final_epoch(net, {w1: ETH, w2: ETH // 2, w3: ETH // 4})
    before = {w: net.balance("0x" + w.hex()) for w in (w1, w2, w3)}
    anyone = net.client("sentry2")
    anyone.payout(batch(epoch, w2, w1))  # in any order: the batch puts them in the proof's
    paid = {w: net.balance("0x" + w.hex()) - before[w] for w in (w1, w2, w3)}
    assert paid == {w1: split_fee(ETH, FEE)[0], w2: split_fee(ETH // 2, FEE)[0], w3: 0}
    assert anyone.earned_by([w1, w2, w3]) == {w1: paid[w1], w2: paid[w2], w3: 0}
    anyone.payout(batch(epoch, w1, w2))  # nothing new: nobody is paid twice
    assert net.balance("0x" + w1.hex()) - before[w1] == paid[w1]
    # the worker left out claims by itself, as before
    mine = net.client("other")
    mine.claim_earnings(epoch.earnings[w3], epoch.earnings_proof(w3))
    assert mine.earned_of() == split_fee(ETH // 4, FEE)[0]

    forged = batch(epoch, w1, w2)
    forged = PayoutBatch(forged.workers, (forged.cumulatives[0] + 1, *forged.cumulatives[1:]),
                         forged.proof, forged.flags)  # fmt: skip
    with reverts("NotInTree"):
        anyone.payout(forged)
    with reverts("LengthMismatch"):
        anyone.payout(PayoutBatch((), (), (epoch.earnings_tree.root,), ()))


def test_a_worker_that_refuses_coin_does_not_stop_the_others(net: Net) -> None:
    w1, refuser = b(net, "worker"), bytes.fromhex(net.address[2:])  # the contract: no receive()
    epoch = final_epoch(net, {w1: ETH, refuser: ETH // 2})
    anyone = net.client("sentry2")
    before = net.balance("0x" + w1.hex())
    r = anyone.payout(batch(epoch, w1, refuser))
    assert net.balance("0x" + w1.hex()) - before == split_fee(ETH, FEE)[0]
    assert anyone.earned_by([refuser]) == {refuser: 0}  # left as it was, to claim later
    logs = anyone.contract.events.PayoutSkipped().get_logs(from_block=r.block)
    assert [(log_["args"]["worker"], log_["args"]["amount"]) for log_ in logs] == [
        (net.address, split_fee(ETH // 2, FEE)[0])
    ]


@EMBEDDED
def test_a_payout_stops_at_what_final_epochs_debited(net: Net) -> None:
    w1, w2 = b(net, "worker"), b(net, "worker2")
    # a lying root: worker2's leaf promises 5 ETH nobody paid in
    epoch = final_epoch(net, {w1: ETH}, prior={w2: 5 * ETH})
    with reverts("PoolOverdrawn"):
        net.client("sentry2").payout(batch(epoch, w1, w2))
    assert net.client("sentry2").earned_by([w1, w2]) == {w1: 0, w2: 0}  # all or nothing
