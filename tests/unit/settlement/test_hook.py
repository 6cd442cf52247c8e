"""The market hook: a market voucher's EIP-712 twin, signed by the requester, checked."""

from __future__ import annotations

import pytest
from eth_account import Account

from consensus.errors import Invalid
from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import Domain, chain_task_id
from consensus.settlement.market import chain_voucher_for
from node.chain.hook import SettlementHook

DOMAIN = Domain(31337, b"\x22" * 20)
REF = TaskRef(job_id=b"\x07" * 16, task=3, attempt=1)


def test_requester_signs_worker_checks() -> None:
    req, worker = Account.create(), Account.create()
    signer = SettlementHook(DOMAIN, bytes(req.key))
    sig = signer.sign(REF, worker.address, 5000)
    checker = SettlementHook(DOMAIN)
    checker.check(REF, worker.address, 5000, sig, req.address)
    for ref, amount, who, requester in [
        (REF, 5001, worker.address, req.address),  # more than signed
        (TaskRef(job_id=REF.job_id, task=3, attempt=2), 5000, worker.address, req.address),
        (REF, 5000, Account.create().address, req.address),  # for someone else
        (REF, 5000, worker.address, worker.address),  # not from this requester
    ]:
        with pytest.raises(Invalid) as err:
            checker.check(ref, who, amount, sig, requester)
        assert err.value.what == "voucher.signature"
    with pytest.raises(Invalid, match="not a 0x address"):
        checker.check(REF, "nope", 5000, sig, req.address)


def test_market_ref_maps_onto_contract_ids() -> None:
    v = chain_voucher_for(REF, b"\x01" * 20, 7)
    assert v.job == b"\x07" * 16 + b"\0" * 16
    assert v.task == chain_task_id(3, 1)
