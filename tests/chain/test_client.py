"""The journaled client: rows for every transaction, dry runs, replay after a restart of the
embedded chain, and an outage of a real JSON-RPC chain (anvil) that loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from eth_account import Account
from web3 import Web3

from config.schema import ChainSettings
from consensus.settlement.epoch import Entry, assemble
from node.chain import artifacts
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.errors import ChainMisconfigured, ChainReverted, ChainUnavailable
from node.chain.journal import Journal
from node.chain.service import ChainService, open_settlement
from tests.chain.conftest import ETH, Anvil, make_net

JOB = b"\x42" * 32


def test_every_write_is_journaled_with_its_receipt(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    journal = Journal(tmp_path / "node.db")
    c = Settlement(net.chain, artifacts.load(), net.address, net.keys["requester"], journal=journal)
    r = c.deposit(JOB, ETH, 2 * ETH, net.chain.now() + 600)
    nonce = net.chain.w3.eth.get_transaction_count(c.address)
    with pytest.raises(ChainReverted, match="OverCap"):
        c.deposit(JOB, 2 * ETH, 0, 0)
    assert net.chain.w3.eth.get_transaction_count(c.address) == nonce  # nothing was sent
    mined, reverted = journal.rows()
    assert (mined.state, mined.op, mined.tx_hash, mined.gas_used) == (
        "mined", "deposit", r.tx_hash, r.gas,
    )  # fmt: skip
    assert mined.args == [JOB, 2 * ETH, mined.args[2]] and mined.value_wei == ETH
    assert reverted.state == "reverted" and "OverCap(" in reverted.error
    assert reverted.tx_hash is None


def test_dry_run_estimates_and_sends_nothing(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    journal = Journal(tmp_path / "node.db")
    c = Settlement(
        net.chain, artifacts.load(), net.address, net.keys["requester"], journal=journal,
        dry_run=True,
    )  # fmt: skip
    before = c.balance()
    r = c.deposit(JOB, ETH, 2 * ETH, net.chain.now() + 600)
    assert r.dry_run and r.tx_hash is None and 50_000 < r.gas < 150_000
    assert r.would_send is not None and r.would_send["to"] == net.address
    assert r.would_send["value_wei"] == str(ETH) and r.would_send["function"] == "deposit"
    selector = Web3.keccak(text="deposit(bytes32,uint256,uint64)")[:4].hex()
    assert r.would_send["data"].removeprefix("0x").startswith(selector.removeprefix("0x"))
    assert c.balance() == before and journal.rows() == []
    with pytest.raises(ChainReverted, match="ZeroAmount"):  # a dry run still says what fails
        c.deposit(JOB, 0, 2 * ETH, net.chain.now() + 600)


def test_the_embedded_chain_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    db = tmp_path / "node.db"
    settings = ChainSettings()
    first = open_settlement(settings, key, db)
    first.deposit(JOB, 3 * ETH, 5 * ETH, first.chain.now() + 3600)
    first.stake(2 * ETH)
    first.request_unstake(ETH)
    job, stake = first.job(JOB), first.stake_of()
    second = open_settlement(settings, key, db)  # a restart: a fresh in-memory EVM
    assert second.contract_address == first.contract_address  # the same EIP-712 domain
    assert second.job(JOB)["balance"] == job["balance"] == 3 * ETH
    assert second.stake_of()["bonded"] == stake["bonded"] == ETH
    assert second.stake_of()["unbonding"] == ETH
    assert [r.state for r in Journal(db).rows()] == ["mined"] * 3  # replay adds no rows


def test_replay_restores_epochs_pools_and_disputes(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    db = tmp_path / "node.db"
    me = bytes.fromhex(Account.from_key(key).address[2:])
    first = open_settlement(ChainSettings(), key, db)
    first.fund(3 * ETH)
    first.stake(ETH)  # this node is requester and anchorer at once
    entry = Entry(me, b"\x05" * 20, JOB, b"\x00" * 32, ETH)
    epoch = assemble([entry], {}, {}, 100)
    first.post_anchor(epoch)
    first.dispute(0, entry, epoch.entry_proof(entry))  # tuples and lists of bytes in the journal
    second = open_settlement(ChainSettings(), key, db)
    assert second.pool_of() == first.pool_of() and second.pool_of()["balance"] == 2 * ETH
    assert second.anchor()["open_disputes"] == 1
    assert second.anchor()["earnings_root"] == epoch.earnings_tree.root


def test_rpc_start_up_checks_chain_id_and_contract(anvil: Anvil) -> None:
    key = bytes(Account.create().key)
    net = make_net(Chain.rpc(anvil.url, 31337))
    good = ChainSettings(backend="rpc", rpc_url=anvil.url, chain_id=31337, contract=net.address)
    assert open_settlement(good, key, None).contract_address == net.address
    with pytest.raises(ChainMisconfigured, match=r"chain\.chain_id is 1 but"):
        open_settlement(ChainSettings(**{**good.__dict__, "chain_id": 1}), key, None)
    empty = "0x" + "11" * 20
    with pytest.raises(ChainMisconfigured, match="no contract"):
        open_settlement(ChainSettings(**{**good.__dict__, "contract": empty}), key, None)
    with pytest.raises(ChainUnavailable, match="no answer"):
        open_settlement(
            ChainSettings(**{**good.__dict__, "rpc_url": "http://127.0.0.1:9"}), key, None
        )


def _rpc_client(anvil: Anvil, tmp_path: Path) -> tuple[Settlement, Journal]:
    net = make_net(Chain.rpc(anvil.url, 31337))
    journal = Journal(tmp_path / "node.db")
    c = Settlement(net.chain, artifacts.load(), net.address, net.keys["requester"], journal=journal)
    return c, journal


def test_a_signed_but_unsent_transaction_is_rebroadcast(anvil: Anvil, tmp_path: Path) -> None:
    c, journal = _rpc_client(anvil, tmp_path)
    # The state a crash between "journal sent" and the broadcast leaves behind.
    fn = c.contract.functions.stake()
    tx = fn.build_transaction(
        {"from": c.address, "value": ETH, "nonce": c.w3.eth.get_transaction_count(c.address)}
    )
    signed = Account.sign_transaction(tx, c._key)
    row = journal.begin(c.chain.chain_id, c.contract_address, "stake", [], ETH, c.address)
    journal.update(
        row, "sent", tx_hash="0x" + bytes(signed.hash).hex(), raw_tx=bytes(signed.raw_transaction)
    )
    assert c.stake_of()["bonded"] == 0
    assert c.reconcile() == []
    assert c.stake_of()["bonded"] == ETH
    assert journal.rows()[0].state == "mined"


async def test_an_outage_delays_settlement_and_loses_nothing(
    anvil_bin: str, tmp_path: Path
) -> None:
    node = Anvil(anvil_bin, state=tmp_path / "anvil.json")
    node.start()
    try:
        c, journal = _rpc_client(node, tmp_path)
        down = trio.Event()
        service = ChainService(lambda: c, retry_base_s=0.05, on_unavailable=lambda e: down.set())
        await service.start()
        await trio.to_thread.run_sync(node.stop)  # the chain goes away (state saved to file)
        result: list[object] = []

        async def deposit() -> None:
            result.append(await service.submit("deposit", [JOB, 2 * ETH, 2**40], ETH))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(deposit)
                await down.wait()
                assert [r.state for r in journal.rows()] == ["pending"]
                await trio.to_thread.run_sync(node.start)  # back, with its state
        assert result == [None]  # finished by reconcile, not by the first attempt
        assert [r.state for r in journal.rows()] == ["mined"]
        assert c.job(JOB)["balance"] == ETH  # sent exactly once
    finally:
        node.stop()
