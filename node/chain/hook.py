"""The hook for the market: an EIP-712 signature next to every market voucher, checked by the
worker before it keeps working.

Requester side (``node/market/task_runner.py``, where it builds each ``Voucher``)::

    sig = settlement_hook.sign(ref, worker_address, amount_wei)   # 65 bytes, send with it
    spend = settlement_hook.spend(cumulative)   # and its Spend (``node/chain/spending.py``)

Worker side (``node/market/worker.py``, where it accepts a voucher, before ``store.vouched``)::

    settlement_hook.check(ref, my_address, amount_wei, sig, requester_address)  # Invalid if not
    settlement_hook.check_spend(spend, amount_wei, requester_address)           # likewise

and keep ``sig`` and the spend with the voucher: ``idlegrid wallet claim`` (or an anchor) turns
them into coin.
Both sides need the other's chain address; ``identity.json`` binds it to the peer id.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.errors import Invalid
from consensus.market.messages import TaskRef
from consensus.settlement.eip712 import Domain
from consensus.settlement.epoch import Spend
from consensus.settlement.market import chain_voucher_for
from consensus.settlement.messages import entry_of
from node.chain.signing import sign_cap, sign_spend, sign_voucher, spend_signer, voucher_signer


@dataclass(frozen=True)
class SettlementHook:
    """Signs and checks the chain twin of market vouchers for one deployment (``domain``)."""

    domain: Domain
    wallet_key: bytes | None = None  # the requester's; None on a node that only checks

    def sign(self, ref: TaskRef, worker_address: str, amount_wei: int) -> bytes:
        if self.wallet_key is None:
            raise RuntimeError("SettlementHook.sign needs the wallet key")
        voucher = chain_voucher_for(ref, _address(worker_address), amount_wei)
        return sign_voucher(self.wallet_key, self.domain, voucher)

    def cap(self, ref: TaskRef, worker_address: str, amount_wei: int) -> tuple[bytes, bytes]:
        """``(cap_sig, voucher_sig)`` closing ``ref``'s line at ``amount_wei`` (see
        ``VoucherCap``); the voucher signature is empty for 0."""
        if self.wallet_key is None:
            raise RuntimeError("SettlementHook.cap needs the wallet key")
        worker = _address(worker_address)
        entry = entry_of(ref, b"\0" * 20, worker, amount_wei)  # the requester is not signed
        cap_sig = sign_cap(self.wallet_key, self.domain, entry)
        voucher_sig = self.sign(ref, worker_address, amount_wei) if amount_wei > 0 else b""
        return cap_sig, voucher_sig

    def spend(self, requester_address: str, cumulative: int) -> Spend:
        """The ``Spend`` of ``cumulative`` wei in all (the caller keeps it monotonic)."""
        if self.wallet_key is None:
            raise RuntimeError("SettlementHook.spend needs the wallet key")
        return sign_spend(self.wallet_key, self.domain, _address(requester_address), cumulative)

    def check_spend(self, spend: Spend, amount_wei: int, requester: str) -> None:
        """Raises ``Invalid("voucher.spend", ...)`` unless ``requester`` signed ``spend`` and it
        covers at least the voucher of ``amount_wei`` it came with."""
        if "0x" + spend.requester.hex() != requester.lower():
            raise Invalid("voucher.spend", f"names 0x{spend.requester.hex()}, not {requester}")
        if spend.cumulative < amount_wei:
            raise Invalid("voucher.spend", f"{spend.cumulative} wei in all is below this "
                          f"voucher's {amount_wei}")  # fmt: skip
        signer = spend_signer(self.domain, spend)
        if signer.lower() != requester.lower():
            raise Invalid("voucher.spend", f"signed by {signer}, not the requester {requester}")

    def check(
        self, ref: TaskRef, worker_address: str, amount_wei: int, sig: bytes, requester: str
    ) -> None:
        """Raises ``Invalid("voucher.signature", ...)`` unless ``requester`` signed exactly this."""
        voucher = chain_voucher_for(ref, _address(worker_address), amount_wei)
        signer = voucher_signer(self.domain, voucher, sig)
        if signer.lower() != requester.lower():
            raise Invalid("voucher.signature", f"signed by {signer}, not the requester {requester}")


def _address(text: str) -> bytes:
    if not (text.startswith("0x") and len(text) == 42):
        raise Invalid("voucher.worker", f"{text!r} is not a 0x address")
    return bytes.fromhex(text[2:])
