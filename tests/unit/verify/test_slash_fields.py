"""A failing verdict's slash signature: only for the chain account the worker bound to itself."""

from __future__ import annotations

import pytest

from consensus.errors import Invalid
from consensus.settlement.eip712 import Domain, slash_digest
from consensus.verify.messages import attestation_id
from node.chain.signing import recover
from node.identity import NodeKeys, wallet_binding
from node.verify.slashing import SlashSigner
from tests.unit.verify.factories import honest

DOMAIN = Domain(31337, b"\x22" * 20)


def test_a_bound_worker_gets_a_slash_signature_and_nobody_else_does() -> None:
    worker, sentry, victim = NodeKeys.generate(), NodeKeys.generate(), NodeKeys.generate()
    address = bytes.fromhex(worker.address[2:])
    att = honest(3).attestation(
        worker=worker.peer_id, chain_address=address, binding_sig=wallet_binding(worker)
    )
    signer = SlashSigner(sentry.wallet_key, DOMAIN, 10**17)
    fields = signer(att, attestation_id(att), bitwise=True)
    assert fields is not None and fields["worker_address"] == address
    digest = slash_digest(DOMAIN, address, 10**17, attestation_id(att))
    assert recover(digest, fields["slash_sig"]) == sentry.address
    # naming someone else's account (with one's own binding) signs nothing
    framed = att.__class__(**{**att.__dict__, "chain_address": bytes.fromhex(victim.address[2:])})
    assert signer(framed, attestation_id(framed), bitwise=True) is None
    stolen = att.__class__(**{**att.__dict__, "worker": victim.peer_id})  # another's binding
    assert signer(stolen, attestation_id(stolen), bitwise=True) is None
    assert signer(honest(3).attestation(), b"\x00" * 32, bitwise=True) is None  # no account
    # a fail resting on a replay in another determinism class is never signed
    assert signer(att, attestation_id(att), bitwise=False) is None


def test_chain_fields_come_together_and_leave_old_ids_alone() -> None:
    run = honest(2)
    with pytest.raises(Invalid, match="chain_address"):
        run.attestation(chain_address=b"\x01" * 20)
    before = attestation_id(run.attestation())
    assert attestation_id(run.attestation(chain_address=b"", binding_sig=b"")) == before
