"""The journaled client: rows for every transaction, dry runs, replay after a restart of the
embedded chain, and an outage of a real JSON-RPC chain (anvil) that loses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from eth_account import Account
from eth_utils.abi import function_abi_to_4byte_selector
from web3 import Web3

from config.schema import ChainSettings
from consensus.settlement.epoch import Entry, assemble
from node.chain import artifacts
from node.chain.backend import Chain
from node.chain.client import Settlement
from node.chain.errors import ChainMisconfigured, ChainRefused, ChainReverted, ChainUnavailable
from node.chain.journal import Journal
from node.chain.service import (
    FAUCET_WEI,
    ChainService,
    check_contract,
    missing_functions,
    open_settlement,
)
from node.chain.signing import sign_spend
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
    assert mined.args == [JOB, 2 * ETH, mined.args[2], ETH] and mined.value_wei == ETH
    assert reverted.state == "reverted" and "OverCap(" in reverted.error
    assert reverted.tx_hash is None


def _cannot_pay(c: Settlement, journal: Journal) -> None:
    """A fund the wallet cannot pay is refused in one error, and never sent: not by this
    call, nor by a later reconcile (which once sent such a row, left pending)."""
    nonce, too_much = c.w3.eth.get_transaction_count(c.address), c.balance() + ETH
    with pytest.raises(ChainRefused, match="fund: the chain refused it, nothing was sent"):
        c.fund(too_much)
    assert [r.state for r in journal.rows()] == ["failed"]
    assert c.reconcile() == [] and [r.state for r in journal.rows()] == ["failed"]
    assert c.w3.eth.get_transaction_count(c.address) == nonce and c.pool_of()["balance"] == 0
    c.dry_run = True
    with pytest.raises(ChainRefused):
        c.fund(too_much)


def test_a_transaction_the_wallet_cannot_pay_is_refused_and_never_sent(tmp_path: Path) -> None:
    net = make_net(Chain.embedded())
    journal = Journal(tmp_path / "node.db")
    c = Settlement(net.chain, artifacts.load(), net.address, net.keys["requester"], journal=journal)
    _cannot_pay(c, journal)


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
    selector = Web3.keccak(text="deposit(bytes32,uint256,uint64,uint256)")[:4].hex()
    assert r.would_send["data"].removeprefix("0x").startswith(selector.removeprefix("0x"))
    assert c.balance() == before and journal.rows() == []
    with pytest.raises(ChainReverted, match="ZeroAmount"):  # a dry run still says what fails
        c.deposit(JOB, 0, 2 * ETH, net.chain.now() + 600)


@pytest.mark.parametrize("token", ["", "test"])
def test_the_embedded_chain_is_rebuilt_from_the_journal(token: str, tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    db = tmp_path / "node.db"
    settings = ChainSettings(token=token)
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
    if token:  # every token the wallet paid is in the contract, on the rebuilt chain too
        assert second.balance() == first.balance() == FAUCET_WEI - 5 * ETH
    ops = [r.op for r in Journal(db).rows("mined")]  # replay adds no rows
    paid = ["approve", "deposit", "approve", "stake"] if token else ["deposit", "stake"]
    assert ops == [*paid, "requestUnstake"] and len(Journal(db).rows()) == len(ops)
    assert (second.token is not None) == bool(token)


def test_a_crash_between_approve_and_deposit_resumes_with_one_approve(tmp_path: Path) -> None:
    key, db = bytes(Account.create().key), tmp_path / "node.db"
    first = open_settlement(ChainSettings(token="test"), key, db)
    first.approve(3 * ETH)  # ... and the node dies before the deposit
    second = open_settlement(ChainSettings(token="test"), key, db)  # replays the approve
    assert second.allowance() == 3 * ETH
    second.deposit(JOB, 3 * ETH, 5 * ETH, second.chain.now() + 3600)  # the retried deposit
    assert [r.op for r in Journal(db).rows()] == ["approve", "deposit"]  # no second approve
    assert second.allowance() == 0 and second.job(JOB)["balance"] == 3 * ETH
    assert second.balance() == FAUCET_WEI - 3 * ETH


def test_a_journal_row_from_before_the_amount_argument_replays(tmp_path: Path) -> None:
    key, db = bytes(Account.create().key), tmp_path / "node.db"
    c = open_settlement(ChainSettings(), key, db)
    journal = Journal(db)
    row = journal.begin(c.chain.chain_id, c.contract_address, "stake", [], ETH, c.address)
    journal.update(row, "mined")  # stake() took msg.value alone
    assert open_settlement(ChainSettings(), key, db).stake_of()["bonded"] == ETH


async def test_an_outage_after_the_approve_still_sends_the_call(tmp_path: Path) -> None:
    c = open_settlement(ChainSettings(token="test"), bytes(Account.create().key), tmp_path / "db")
    real_send = Settlement.send

    def receipt_lost(self: Settlement, op: str, args: list[object], value: int = 0) -> object:
        result = real_send(self, op, args, value)
        if op == "approve":  # mined, but the node never heard so
            raise ChainUnavailable("approve: no receipt", result.journal_id)
        return result

    service = ChainService(lambda: c, retry_base_s=0.01)
    await service.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Settlement, "send", receipt_lost)
        result = await service.pay("fund", [], 2 * ETH)
    assert result is not None and result.op == "fund"
    assert c.pool_of()["balance"] == 2 * ETH and c.allowance() == 0
    assert c.journal is not None
    assert [r.op for r in c.journal.rows("mined")] == ["approve", "fund"]


def test_replay_restores_epochs_pools_and_disputes(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    db = tmp_path / "node.db"
    me = bytes.fromhex(Account.from_key(key).address[2:])
    first = open_settlement(ChainSettings(), key, db)
    first.fund(3 * ETH)
    first.stake(ETH)  # this node is requester and anchorer at once
    entry = Entry(me, b"\x05" * 20, JOB, b"\x00" * 32, ETH)
    epoch = assemble([entry], {}, {}, 100)
    first.post_anchor(epoch, {me: sign_spend(key, first.domain, me, ETH)})
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
    with pytest.raises(ChainMisconfigured, match=r"chain\.token is 0x2222.* pays in native coin"):
        open_settlement(ChainSettings(**{**good.__dict__, "token": "0x" + "22" * 20}), key, None)
    with pytest.raises(ChainUnavailable, match="no answer"):
        open_settlement(
            ChainSettings(**{**good.__dict__, "rpc_url": "http://127.0.0.1:9"}), key, None
        )
    newer = artifacts.load()  # as if this node were newer than the contract deployed
    newer.abi.append({"type": "function", "name": "notDeployedYet", "inputs": [], "outputs": [],
                      "stateMutability": "nonpayable"})  # fmt: skip
    with pytest.raises(ChainMisconfigured, match=r"another version .* without notDeployedYet"):
        check_contract(net.chain, newer, net.address)
    ahead = net.chain.w3.eth.block_number + 1000
    with pytest.raises(ChainMisconfigured, match=rf"chain\.from_block {ahead} is past"):
        open_settlement(ChainSettings(**{**good.__dict__, "from_block": ahead}), key, None)


def test_events_are_read_from_chain_from_block(anvil: Anvil) -> None:
    """Events before ``chain.from_block`` are not asked for (on a real chain: before the
    contract was deployed, which is why a provider's long range is avoided)."""
    net = make_net(Chain.rpc(anvil.url, 31337))
    net.client("sentry1").stake(ETH)
    r, w = (bytes.fromhex(net.addr(x)[2:]) for x in ("requester", "worker"))
    net.client("requester").fund(2 * ETH)
    epoch = assemble([Entry(r, w, JOB, JOB, ETH)], {}, {}, 100)
    net.client("sentry1").post_anchor(epoch, net.spends(ETH))
    key = net.keys["requester"]
    settings = ChainSettings(backend="rpc", rpc_url=anvil.url, chain_id=31337,
                             contract=net.address)  # fmt: skip
    assert len(open_settlement(settings, key, None).events("Anchored")) == 1
    after = net.chain.w3.eth.block_number + 1
    net.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[attr-defined]
    later = Settlement(net.chain, artifacts.load(), net.address, key, from_block=after)
    assert later.events("Anchored") == []
    with pytest.raises(ChainMisconfigured, match=rf"from_block {after} is after .*deployment"):
        open_settlement(ChainSettings(**{**settings.__dict__, "from_block": after}), key, None)
    deployed = next(  # the deployment's block: the first with the contract's code
        n for n in range(after) if net.chain.w3.eth.get_code(net.address, block_identifier=n)
    )
    at_deploy = ChainSettings(**{**settings.__dict__, "from_block": deployed})
    assert len(open_settlement(at_deploy, key, None).events("Anchored")) == 1


def _rpc_client(anvil: Anvil, tmp_path: Path) -> tuple[Settlement, Journal]:
    net = make_net(Chain.rpc(anvil.url, 31337))
    journal = Journal(tmp_path / "node.db")
    c = Settlement(net.chain, artifacts.load(), net.address, net.keys["requester"], journal=journal)
    return c, journal


def test_a_json_rpc_chain_refusing_a_payment_sends_nothing(anvil: Anvil, tmp_path: Path) -> None:
    c, journal = _rpc_client(anvil, tmp_path)
    _cannot_pay(c, journal)


def test_a_signed_but_unsent_transaction_is_rebroadcast(anvil: Anvil, tmp_path: Path) -> None:
    c, journal = _rpc_client(anvil, tmp_path)
    # The state a crash between "journal sent" and the broadcast leaves behind.
    fn = c.contract.functions.stake(ETH)
    tx = fn.build_transaction(
        {"from": c.address, "value": ETH, "nonce": c.w3.eth.get_transaction_count(c.address)}
    )
    signed = Account.sign_transaction(tx, c._key)
    row = journal.begin(c.chain.chain_id, c.contract_address, "stake", [ETH], ETH, c.address)
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
            result.append(await service.submit("deposit", [JOB, 2 * ETH, 2**40, ETH], ETH))

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


def test_a_function_is_found_by_its_selector_pushed_as_short_as_it_goes() -> None:
    """Solidity pushes a selector that starts with a zero byte with PUSH3, not PUSH4."""
    name = next(f"f{i}" for i in range(100_000)
                if function_abi_to_4byte_selector(_fn(f"f{i}"))[0] == 0)  # fmt: skip
    short = bytes(function_abi_to_4byte_selector(_fn(name)))[1:]
    assert missing_functions(b"\x00\x62" + short + b"\x14", [_fn(name)]) == []
    assert missing_functions(b"\x00\x63\x00" + short + b"\x14", [_fn(name)]) == [name]
    assert missing_functions(b"\x00" * 64, [_fn("other"), {"type": "event", "name": "E"}]) == [
        "other"
    ]


def _fn(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "inputs": [], "outputs": []}
