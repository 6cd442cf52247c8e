"""EIP-712 digests: golden vectors (a change of encoding shows), eth-account agrees, bad input."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import Invalid
from consensus.settlement.eip712 import (
    ChainVoucher,
    Domain,
    chain_job_id,
    chain_task_id,
    slash_digest,
    spend_digest,
    split_fee,
    voucher_digest,
)
from node.chain.signing import recover, sign_voucher, voucher_signer

DOMAIN = Domain(31337, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
WORKER = bytes.fromhex("70997970C51812dc3A010C7d01b50e0d17dc79C8")
VOUCHER = ChainVoucher(chain_job_id(b"job-0001"), chain_task_id(3, 1), WORKER, 10**18)
KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")


def test_golden_vectors() -> None:
    assert DOMAIN.separator().hex() == (
        "e886d0823e33dfca0d7c9d5b8cdf0394aaa42e459072eefc6847af502bf644a3"
    )
    assert voucher_digest(DOMAIN, VOUCHER).hex() == (
        "a8f8db28e90dd295e8a1a4b05344adeb6cef86085b6f8a40e29ba0dfaf3eeb80"
    )
    assert slash_digest(DOMAIN, WORKER, 5, b"\1" * 32).hex() == (
        "caea30e78e78853f96b05f0cbefb1c5739c760771156b4de1ad1078d3cdbe7d2"
    )
    # Spend(requester, cumulative), also what eth-account's encode_typed_data gives
    assert spend_digest(DOMAIN, WORKER, 3 * 10**18).hex() == (
        "268dbe13f1c9dff708aa119ecbf3bc493413eaccb3a2f96f7d54d9709a296100"
    )
    with pytest.raises(Invalid, match=r"spend\.cumulative"):
        spend_digest(DOMAIN, WORKER, -1)
    assert sign_voucher(KEY, DOMAIN, VOUCHER).hex() == (
        "8ca744a8ebeab9aae32b1ea76258c3884fa5b6773f7c75eafaf1caaf39fa80e1"
        "0543ee7c3ce671477fa950ae61a8612fe9ede83c81c046933432a5ce9e05de6d1c"
    )


def _eth_account_digest(v: ChainVoucher) -> bytes:
    message = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Voucher": [
                    {"name": "job", "type": "bytes32"},
                    {"name": "task", "type": "bytes32"},
                    {"name": "worker", "type": "address"},
                    {"name": "cumulative", "type": "uint256"},
                ],
            },
            "primaryType": "Voucher",
            "domain": {
                "name": "idlegrid",
                "version": "1",
                "chainId": DOMAIN.chain_id,
                "verifyingContract": "0x" + DOMAIN.contract.hex(),
            },
            "message": {
                "job": v.job,
                "task": v.task,
                "worker": "0x" + v.worker.hex(),
                "cumulative": v.cumulative,
            },
        }
    )
    return bytes(_hash_eip191_message(message))


@given(
    job=st.binary(min_size=32, max_size=32),
    task=st.binary(min_size=32, max_size=32),
    amount=st.integers(min_value=1, max_value=2**256 - 1),
)
def test_an_independent_eip712_implementation_agrees(job: bytes, task: bytes, amount: int) -> None:
    v = ChainVoucher(job, task, WORKER, amount)
    assert voucher_digest(DOMAIN, v) == _eth_account_digest(v)


def test_sign_and_recover_round_trip() -> None:
    sig = sign_voucher(KEY, DOMAIN, VOUCHER)
    assert voucher_signer(DOMAIN, VOUCHER, sig) == Account.from_key(KEY).address
    tampered = ChainVoucher(VOUCHER.job, VOUCHER.task, VOUCHER.worker, VOUCHER.cumulative + 1)
    assert voucher_signer(DOMAIN, tampered, sig) != Account.from_key(KEY).address
    with pytest.raises(Invalid, match="signature"):
        recover(b"\0" * 32, sig[:64])
    with pytest.raises(Invalid, match="v must be 27 or 28"):
        recover(b"\0" * 32, sig[:64] + b"\x05")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"job": b"\0" * 31}, "voucher.job"),
        ({"task": b"\0" * 33}, "voucher.task"),
        ({"worker": b"\0" * 19}, "voucher.worker"),
        ({"cumulative": 0}, "voucher.cumulative"),
        ({"cumulative": 2**256}, "voucher.cumulative"),
        ({"cumulative": 1.5}, "voucher.cumulative"),
    ],
)
def test_bad_vouchers_name_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {
        "job": b"\0" * 32,
        "task": b"\0" * 32,
        "worker": WORKER,
        "cumulative": 1,
    }
    with pytest.raises(Invalid) as err:
        ChainVoucher(**{**base, **kwargs})  # type: ignore[arg-type]
    assert err.value.what == field


def test_ids_and_fees() -> None:
    assert chain_job_id(b"\1" * 16) == b"\1" * 16 + b"\0" * 16
    assert chain_task_id(1, 2) == (2**32 + 2).to_bytes(32, "big")
    with pytest.raises(Invalid):
        chain_task_id(-1, 0)
    assert split_fee(10**18, 100) == (99 * 10**16, 10**16)
    assert split_fee(99, 100) == (99, 0)  # the fee rounds down, in the worker's favour
    with pytest.raises(Invalid):
        split_fee(1, 10_001)
