"""A sentry's half of slashing: its signature of the contract's Slash digest on a failing verdict.

The worker's attestation names its chain account with the wallet's binding to its peer id
(``node.identity.wallet_binding``); without a valid binding nothing is signed, so a worker can
never point a slash at someone else's stake. The signature travels in the verdict; the
sentries' slashers (``node/chain/slasher.py``) combine a quorum of them into one ``slash``.

Only a fail on bitwise grounds is signed (:func:`consensus.verify.escalation.slashable`): an
answer inconsistent with the signed attestation, silence, a replay in the worker's own
determinism class, or a bisection's one step from the worker's own state. A fail resting on
a whole segment replayed in another class is never signed, so a cross-class miss alone can
cost no stake (it escalates, and is bisected; see ``node/verify/sentry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.settlement.eip712 import Domain
from consensus.verify.messages import Attestation
from node.chain.signing import sign_slash
from node.identity import wallet_binding_ok


@dataclass(frozen=True)
class SlashSigner:
    wallet_key: bytes
    domain: Domain
    amount_wei: int  # verify.slash_wei: the same on every sentry, or signatures never combine

    def __call__(self, att: Attestation, att_id: bytes, *, bitwise: bool) -> dict[str, Any] | None:
        """The verdict's slash fields for a failed ``att``, or None: no bound chain account,
        or the fail is not ``bitwise`` (it rests on a cross-class replay)."""
        if not bitwise:
            return None
        if not att.chain_address or not wallet_binding_ok(
            att.worker, att.chain_address, att.binding_sig
        ):
            return None
        sig = sign_slash(self.wallet_key, self.domain, att.chain_address, self.amount_wei, att_id)
        return {"worker_address": att.chain_address, "slash_wei": self.amount_wei, "slash_sig": sig}
