"""EIP-712 signatures with the node's secp256k1 wallet key, and their recovery.

The digests come from :mod:`consensus.settlement.eip712`; this module only adds the key.
"""

from __future__ import annotations

from eth_account import Account
from eth_keys.datatypes import Signature

from consensus.errors import Invalid
from consensus.settlement.eip712 import (
    ChainVoucher,
    Domain,
    cap_digest,
    slash_digest,
    spend_digest,
    voucher_digest,
)
from consensus.settlement.epoch import Entry, Spend
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import VoucherCap


def sign_digest(key: bytes, digest: bytes) -> bytes:
    """65-byte ``r || s || v`` (v = 27/28), as OpenZeppelin's ECDSA.recover expects."""
    return bytes(Account.unsafe_sign_hash(digest, key).signature)


def recover(digest: bytes, signature: bytes) -> str:
    """The checksummed address that signed ``digest``.

    Raises:
        Invalid: the signature is not 65 bytes or does not recover.
    """
    if len(signature) != 65:
        raise Invalid("signature", f"must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise Invalid("signature", f"v must be 27 or 28, got {v}")
    try:
        sig = Signature(signature[:64] + bytes([v - 27]))
        return str(sig.recover_public_key_from_msg_hash(digest).to_checksum_address())
    except Exception as exc:
        raise Invalid("signature", f"does not recover: {exc}") from None


def sign_voucher(key: bytes, domain: Domain, voucher: ChainVoucher) -> bytes:
    return sign_digest(key, voucher_digest(domain, voucher))


def voucher_signer(domain: Domain, voucher: ChainVoucher, signature: bytes) -> str:
    return recover(voucher_digest(domain, voucher), signature)


def sign_slash(key: bytes, domain: Domain, worker: bytes, amount: int, evidence: bytes) -> bytes:
    return sign_digest(key, slash_digest(domain, worker, amount, evidence))


def sign_spend(key: bytes, domain: Domain, requester: bytes, cumulative: int) -> Spend:
    """The requester's ``Spend``: anchors may debit its pool at most ``cumulative`` in all."""
    sig = sign_digest(key, spend_digest(domain, requester, cumulative))
    return Spend(requester, cumulative, sig)


def spend_signer(domain: Domain, spend: Spend) -> str:
    return recover(spend_digest(domain, spend.requester, spend.cumulative), spend.signature)


def sign_cap(key: bytes, domain: Domain, entry: Entry) -> bytes:
    """Closes ``entry``'s line at its amount (see ``VoucherCap``)."""
    return sign_digest(key, _cap_digest(domain, entry))


def cap_signer(domain: Domain, entry: Entry, signature: bytes) -> str:
    return recover(_cap_digest(domain, entry), signature)


def _cap_digest(domain: Domain, e: Entry) -> bytes:
    return cap_digest(domain, e.job, e.task, e.worker, e.amount)


def check_cap(domain: Domain, c: VoucherCap) -> None:
    """Raises Invalid unless the cap, its voucher and its spend (if any) are all the
    requester's."""
    requester = "0x" + c.requester.hex()
    signers = {cap_signer(domain, c.entry(), c.cap_sig).lower()}
    if c.amount_wei > 0:
        voucher = chain_voucher_for(c.ref, c.worker, c.amount_wei)
        signers.add(voucher_signer(domain, voucher, c.voucher_sig).lower())
    if (spend := c.spend()) is not None:
        signers.add(spend_signer(domain, spend).lower())
    if signers != {requester}:
        raise Invalid("cap.signature", f"signed by {sorted(signers)}, not {requester}")
