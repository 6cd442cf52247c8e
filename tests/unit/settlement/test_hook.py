"""The market hook: a market voucher's EIP-712 twin, signed by the requester, checked."""

from __future__ import annotations

import pytest
from eth_account import Account

from consensus.errors import Invalid
from consensus.kinds import Wei
from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import Domain, chain_task_id
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import VoucherCap
from node.chain.hook import SettlementHook
from node.chain.signing import check_cap

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


def test_a_spend_is_the_requesters_and_covers_its_voucher() -> None:
    req, worker = Account.create(), Account.create()
    spend = SettlementHook(DOMAIN, bytes(req.key)).spend(req.address, 9000)
    checker = SettlementHook(DOMAIN)
    checker.check_spend(spend, 9000, req.address)
    forged = SettlementHook(DOMAIN, bytes(worker.key)).spend(req.address, 9000)
    for bad, amount, requester, why in [
        (spend, 9001, req.address, "below this voucher's 9001"),
        (spend, 10, worker.address, "names 0x"),
        (forged, 10, req.address, "not the requester"),
    ]:
        with pytest.raises(Invalid, match=why) as err:
            checker.check_spend(bad, amount, requester)
        assert err.value.what == "voucher.spend"


def test_market_ref_maps_onto_contract_ids() -> None:
    v = chain_voucher_for(REF, b"\x01" * 20, 7)
    assert v.job == b"\x07" * 16 + b"\0" * 16
    assert v.task == chain_task_id(3, 1)


def test_a_cap_carries_the_requesters_two_signatures_and_nothing_else_passes() -> None:
    req, worker = Account.create(), Account.create()
    hook = SettlementHook(DOMAIN, bytes(req.key))
    cap_sig, voucher_sig = hook.cap(REF, worker.address, 600)

    def cap(amount: int, cap_sig: bytes, voucher_sig: bytes) -> VoucherCap:
        return VoucherCap(
            expires_ms=1, nonce=b"\x00" * 16, ref=REF, requester=bytes.fromhex(req.address[2:]),
            worker=bytes.fromhex(worker.address[2:]), amount_wei=Wei(amount), cap_sig=cap_sig,
            voucher_sig=voucher_sig,
        )  # fmt: skip

    check_cap(DOMAIN, cap(600, cap_sig, voucher_sig))
    zero_sig, none = hook.cap(REF, worker.address, 0)
    assert none == b""
    check_cap(DOMAIN, cap(0, zero_sig, b""))
    old_voucher = hook.sign(REF, worker.address, 600)  # gossiped in the open: not a cap
    by_worker = SettlementHook(DOMAIN, bytes(worker.key)).cap(REF, worker.address, 600)[0]
    for forged in (
        cap(600, old_voucher, voucher_sig),
        cap(500, cap_sig, voucher_sig),  # another amount
        cap(600, by_worker, voucher_sig),
    ):
        with pytest.raises(Invalid) as err:
            check_cap(DOMAIN, forged)
        assert err.value.what in ("cap.signature", "signature")
    with pytest.raises(Invalid, match=r"cap\.voucher_sig"):
        cap(600, cap_sig, b"")


def test_a_cap_may_carry_the_requesters_spend_and_only_its_own() -> None:
    req, worker = Account.create(), Account.create()
    hook = SettlementHook(DOMAIN, bytes(req.key))
    cap_sig, voucher_sig = hook.cap(REF, worker.address, 600)

    def cap(spend_wei: int | None, spend_sig: bytes | None) -> VoucherCap:
        return VoucherCap(
            expires_ms=1, nonce=b"\x00" * 16, ref=REF, requester=bytes.fromhex(req.address[2:]),
            worker=bytes.fromhex(worker.address[2:]), amount_wei=Wei(600), cap_sig=cap_sig,
            voucher_sig=voucher_sig,
            spend_wei=None if spend_wei is None else Wei(spend_wei), spend_sig=spend_sig,
        )  # fmt: skip

    spend = hook.spend(req.address, 5000)
    with_spend = cap(5000, spend.signature)
    check_cap(DOMAIN, with_spend)
    assert with_spend.spend() == spend and cap(None, None).spend() is None
    forged = SettlementHook(DOMAIN, bytes(worker.key)).spend(req.address, 9000)
    with pytest.raises(Invalid, match=r"cap\.signature"):
        check_cap(DOMAIN, cap(9000, forged.signature))
    with pytest.raises(Invalid, match="come together"):
        cap(5000, None)
