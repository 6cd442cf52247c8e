"""The anchoring service against the embedded EVM: vouchers in, an epoch posted, a dispute
answered with the requester's own voucher, the epoch finalized, the workers paid."""

from __future__ import annotations

from typing import Any

import trio

from consensus.settlement.anchoring import Anchoring
from consensus.settlement.eip712 import ChainVoucher, chain_task_id, split_fee
from consensus.settlement.epoch import Entry, Epoch, Spend
from node.chain.anchoring import run_anchoring
from node.chain.backend import Chain
from node.chain.service import ChainService
from node.chain.signing import sign_voucher
from tests.chain.conftest import ETH, make_net

FEE = 100


async def test_posts_answers_finalizes_and_workers_claim() -> None:
    net = make_net(Chain.embedded())
    c = {name: net.client(name) for name in ("requester", "worker", "worker2", "sentry1")}
    service = ChainService(lambda: c["sentry1"])
    await service.start()
    steps: dict[str, trio.Event] = {s: trio.Event() for s in ("posted", "answered", "finalized")}
    seen: dict[str, Any] = {}

    def notify(step: str, detail: Any) -> None:
        seen[step] = detail
        steps[step].set()

    await service.call(lambda _: c["requester"].fund(10 * ETH))
    await service.call(lambda _: c["sentry1"].stake(ETH))
    send, receive = trio.open_memory_channel[tuple[Entry, bytes, Spend]](16)
    req = bytes.fromhex(net.addr("requester")[2:])
    lines = [(b"\x01" * 32, "worker", 2 * ETH), (b"\x02" * 32, "worker2", ETH)]
    for job, worker, amount in lines:  # queued before the service starts: one epoch
        e = Entry(req, bytes.fromhex(net.addr(worker)[2:]), job, chain_task_id(0, 0), amount)
        v = ChainVoucher(e.job, e.task, e.worker, e.amount)
        sig = sign_voucher(net.keys["requester"], c["requester"].domain, v)
        await send.send((e, sig, net.spend("requester", 3 * ETH)))
    machine = Anchoring(epoch_ms=0, fee_bps=FEE)

    async def anchoring(task_status: Any) -> None:
        await run_anchoring(service, machine, receive, poll_s=0.02, notify=notify,
                            task_status=task_status)  # fmt: skip

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(anchoring)
            await steps["posted"].wait()
            epoch: Epoch = seen["posted"]
            assert epoch.debits == {req: 3 * ETH}
            disputed = epoch.entries[0]
            await service.call(
                lambda _: c["requester"].dispute(0, disputed, epoch.entry_proof(disputed))
            )
            await steps["answered"].wait()
            assert seen["answered"] == disputed
            await service.call(lambda _: net.chain.advance(3601))
            await steps["finalized"].wait()
            nursery.cancel_scope.cancel()
    assert c["requester"].anchor()["state"] == "final"
    for name in ("worker", "worker2"):
        me = bytes.fromhex(net.addr(name)[2:])
        before = c[name].balance()
        r = c[name].claim_earnings(epoch.earnings[me], epoch.earnings_proof(me))
        receipt = net.chain.w3.eth.get_transaction_receipt(r.tx_hash)  # type: ignore[arg-type]
        gained = c[name].balance() - before + receipt["gasUsed"] * receipt["effectiveGasPrice"]
        gross = 2 * ETH if name == "worker" else ETH
        assert gained == split_fee(gross, FEE)[0]
