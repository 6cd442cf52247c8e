"""An anchorer that acts through a contract of its own (``TestForwarder``): what its answers
show is not in its transactions' call data, so watchers and requesters read it from the
contract's events (``EntriesShown``, ``LeavesShown``), and find it all the same."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eth_account import Account

from consensus.settlement.audits import DEBIT, answer
from consensus.settlement.epoch import assemble
from consensus.settlement.shown import ShownLeaves
from node.chain import artifacts
from node.chain.client import GAS_MARGIN_PCT, Settlement
from tests.chain.conftest import ETH, Net
from tests.chain.test_epochs import FEE, J2, T0, WINDOW, b, entries


def through_a_contract(net: Net, who: str) -> Settlement:
    """``who``'s client, its every write sent through a forwarder it deployed: the anchorer
    the contract sees is the forwarder."""
    art = artifacts.load("TestForwarder")
    key = net.keys[who]
    forwarder = net.chain.w3.eth.contract(
        address=net.chain.deploy_contract(art, [], key), abi=art.abi
    )
    client = net.client(who)
    owner = Account.from_key(key).address

    def send(op: str, args: list[Any], value: int = 0) -> Any:
        data = client.contract.encode_abi(op, args=args)
        call = forwarder.functions.forward(client.contract.address, data)
        # With the node's margin: a call that moves a deadline to now + window writes one
        # more slot when mined a second after its estimate (answerLeaves did, and reverted).
        gas = call.estimate_gas({"from": owner, "value": value})
        nonce = net.chain.w3.eth.get_transaction_count(owner)
        tx = call.build_transaction({"from": owner, "value": value, "nonce": nonce,
                                     "gas": gas * (100 + GAS_MARGIN_PCT) // 100})  # fmt: skip
        signed = Account.sign_transaction(tx, key)
        receipt = net.chain.w3.eth.wait_for_transaction_receipt(
            net.chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
        return receipt

    client.send = send  # type: ignore[method-assign]
    return client


def test_answers_sent_through_a_contract_are_read_from_its_events(net: Net) -> None:
    req = net.client("requester")
    req.fund(10 * ETH)
    anchorer = through_a_contract(net, "sentry1")
    anchorer.stake(ETH)
    epoch = assemble(entries(net, {(J2, T0, "worker"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(epoch, net.spends(ETH))
    watcher = net.client("sentry2")
    assert watcher.anchor()["anchorer"] != net.addr("sentry1")  # the forwarder anchors
    watcher.stake(ETH)
    watcher.dispute_leaves(0)
    req.dispute_debit(0)
    (d,) = [x for x in watcher.sum_disputes(0) if x.kind == DEBIT]
    a = answer(epoch, {}, DEBIT, b(net, "requester"))
    anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof)
    shown = ShownLeaves.of_rows(epoch.earnings.items())
    anchorer.answer_leaves(0, shown, 0)
    assert watcher.sum_disputes(0) == []  # both answered
    ((kind, party, seen, proof),) = watcher.sum_answers(0)
    assert (kind, party, seen) == (DEBIT, b(net, "requester"), list(a.entries))
    assert proof.root() == epoch.entries_tree.root
    assert watcher.leaves_shown(0) == shown


def test_an_anchor_posted_through_a_contract_can_be_voided(net: Net) -> None:
    """A void gives the anchor's debits again: read from its ``Anchored`` event, as the post's
    call data is the forwarder's."""
    req = net.client("requester")
    req.fund(10 * ETH)
    anchorer = through_a_contract(net, "sentry1")
    anchorer.stake(ETH)
    epoch = assemble(entries(net, {(J2, T0, "worker"): ETH}), {}, {}, FEE)
    anchorer.post_anchor(replace(epoch, debits={b(net, "requester"): 2 * ETH}),
                         net.spends(2 * ETH))  # fmt: skip
    assert req.anchor_debits(0) == [(net.addr("requester"), 2 * ETH)]
    req.dispute_debit(0)
    net.chain.advance(WINDOW)
    (d,) = req.sum_disputes(0)
    req.void_sum(d)
    assert req.anchor()["state"] == "void"
    assert req.pool_of()["debited"] == 0
