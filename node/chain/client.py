"""The settlement contract from one wallet: journaled transactions, reads, replay, reconcile.

Synchronous on purpose (web3's HTTP provider and eth-tester both are): call it from one thread,
:class:`node.chain.service.ChainService` does that under trio. Every write goes
``journal.begin`` -> estimate (a revert stops here, decoded, nothing sent) -> sign locally ->
``journal sent`` -> broadcast -> receipt -> ``journal mined|reverted``.

Money goes in (deposit, fund, stake) with an explicit amount: as the value on native coin, or,
when the deployment has a payment token, by an ``approve`` of exactly that amount (its own
journal row, sent to the token) and the contract's ``transferFrom``. A crash between the two
leaves a mined approve; the retried call finds the allowance already set and sends no second one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError

from consensus.settlement.eip712 import Domain
from node.chain.artifacts import Artifact
from node.chain.audit_calls import AuditCalls
from node.chain.backend import Chain
from node.chain.epoch_calls import EpochCalls
from node.chain.errors import ChainRefused, ChainReverted, ChainUnavailable
from node.chain.event_store import EventStore
from node.chain.journal import Journal, TxRow
from node.chain.leaves_calls import LeavesCalls
from node.chain.logs import DEFAULT_SPAN, ContractEvents
from node.chain.reverts import decode_revert, is_revert, revert_data
from node.chain.token import erc20_abi, token_of

log = logging.getLogger(__name__)
# What a node answers for a transaction the account cannot make (short of coin): eth-tester
# raises the first, a JSON-RPC node (anvil, geth) the second.
REFUSALS = (ValidationError, Web3RPCError)
GAS_MARGIN_PCT = 25  # over the estimate: a claim's transfer may cost more than estimated
WRITES = (
    "deposit", "endJob", "withdraw", "claim", "stake", "requestUnstake", "withdrawStake",
    "withdrawFees", "slash", "fund", "leavePool", "withdrawPool", "postAnchor", "finalize",
    "dispute", "answer", "voidAnchor", "claimEarnings", "payout", "approve",
    "disputeEarnings", "disputeDebit", "answerSum", "voidSum", "voidConflict", "voidUnderDebit",
    "voidLowLeaf", "disputeLeaves", "answerLeaves", "disputeEntries", "answerEntries",
    "voidMissingLeaf", "showAbsent", "disputePrevious", "answerPrevious",
)  # fmt: skip
TOKEN_WRITES = ("approve",)  # sent to the payment token, journaled with the settlement's rows
# Writes that bring money in: their last argument is the amount. Journal rows written before
# the amount argument existed (native coin only) lack it; it was the value.
PAYING = {"deposit": 3, "fund": 0, "stake": 0}  # op -> arguments before the amount


@dataclass(frozen=True)
class TxResult:
    op: str
    tx_hash: str | None  # None in dry-run mode
    gas: int  # used (mined) or estimated (dry run)
    block: int | None
    journal_id: int | None
    dry_run: bool = False
    would_send: dict[str, Any] | None = None  # dry run: the transaction, unsigned


def is_transport(exc: BaseException) -> bool:
    return isinstance(exc, requests.RequestException | OSError | TimeExhausted)


class Settlement(EpochCalls, AuditCalls, LeavesCalls):
    """One wallet's view of one deployment of ``IdlegridSettlement``."""

    def __init__(
        self,
        chain: Chain,
        artifact: Artifact,
        contract: str,
        key: bytes,
        *,
        journal: Journal | None = None,
        dry_run: bool = False,
        receipt_timeout_s: float = 120.0,
        from_block: int = 0,
        log_span: int = DEFAULT_SPAN,
        events_db: Path | None = None,
    ) -> None:
        self.chain = chain
        self.w3 = chain.w3
        self.artifact = artifact
        self.address = Web3.to_checksum_address(Account.from_key(key).address)
        self.contract = self.w3.eth.contract(
            address=Web3.to_checksum_address(contract), abi=artifact.abi
        )
        self.contract_address = str(self.contract.address)
        store = None
        if events_db is not None:
            store = EventStore(events_db, chain.chain_id, self.contract_address)
        self.event_log = ContractEvents(self.w3, self.contract, from_block, log_span, store)
        self.token = token_of(self.contract)  # None: native coin
        self.token_contract = None
        if self.token is not None:
            self.token_contract = self.w3.eth.contract(address=self.token, abi=erc20_abi())
        self._errors = artifact.abi + [e for e in erc20_abi() if e["type"] == "error"]
        self.domain = Domain(chain.chain_id, bytes.fromhex(self.contract_address[2:]))
        self._key = key
        self.journal = journal
        self.dry_run = dry_run
        self.receipt_timeout_s = receipt_timeout_s

    # ------------------------------------------------------------------ writes

    def send(self, op: str, args: list[Any], value: int = 0) -> TxResult:
        """Journal, estimate, sign and send ``op(*args)``; wait for its receipt.

        Raises:
            ChainReverted: the contract refuses it (found before anything is sent).
            ChainRefused: the chain's node refuses it (the account cannot pay for it);
                nothing is sent, and the journal row is marked failed.
            ChainUnavailable: the endpoint did not answer; the journal row stays ``pending``
                (or ``sent``) and :meth:`reconcile` finishes it later.
        """
        if op not in WRITES:
            raise ValueError(f"unknown contract write {op!r}")
        if self.dry_run:
            gas = self._estimate(op, args, value)
            tx = {
                "from": self.address, "to": self._target(op).address,
                "chain_id": self.chain.chain_id, "value_wei": str(value), "function": op,
                "data": self._target(op).encode_abi(op, args=args), "gas_estimate": gas,
            }  # fmt: skip
            log.info("dry run: would send %s", op, extra={"tx": tx})
            return TxResult(op, None, gas, None, None, dry_run=True, would_send=tx)
        row = None
        if self.journal is not None:
            row = self.journal.begin(
                self.chain.chain_id, self.contract_address, op, args, value, self.address
            )
        return self._execute(op, args, value, row)

    def _execute(self, op: str, args: list[Any], value: int, row: int | None) -> TxResult:
        try:
            gas = self._estimate(op, args, value)
            tx = getattr(self._target(op).functions, op)(*args).build_transaction(
                {
                    "from": self.address,
                    "value": value,
                    "gas": gas * (100 + GAS_MARGIN_PCT) // 100,
                    "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
                    "chainId": self.chain.chain_id,
                }
            )
        except ChainReverted as exc:
            self._mark(row, "reverted", error=str(exc))
            raise
        except Exception as exc:
            if is_transport(exc):
                raise ChainUnavailable(f"{op}: chain unreachable ({exc})", row) from None
            # Nothing is signed yet: a row left pending would be sent by the next replay,
            # long after the user saw this command fail.
            self._mark(row, "failed", error=str(exc))
            raise
        signed = Account.sign_transaction(tx, self._key)
        tx_hash = "0x" + bytes(signed.hash).hex()
        self._mark(row, "sent", tx_hash=tx_hash, raw_tx=bytes(signed.raw_transaction))
        try:
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:
            if is_transport(exc):
                raise ChainUnavailable(f"{op}: chain unreachable ({exc})", row) from None
            self._mark(row, "failed", error=str(exc))
            raise
        return self._await_receipt(op, tx_hash, row)

    def _await_receipt(self, op: str, tx_hash: str, row: int | None) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash,  # type: ignore[arg-type]
                timeout=self.receipt_timeout_s,
            )
        except Exception as exc:
            if is_transport(exc):
                raise ChainUnavailable(f"{op}: no receipt yet for {tx_hash} ({exc})", row) from None
            raise
        gas, block = int(receipt["gasUsed"]), int(receipt["blockNumber"])
        if receipt["status"] != 1:
            self._mark(row, "reverted", gas_used=gas, block=block, error="reverted when mined")
            raise ChainReverted(op, "RevertedWhenMined", {"tx": tx_hash})
        self._mark(row, "mined", gas_used=gas, block=block)
        return TxResult(op, tx_hash, gas, block, row)

    def _estimate(self, op: str, args: list[Any], value: int) -> int:
        fn = getattr(self._target(op).functions, op)(*args)
        try:
            return int(fn.estimate_gas({"from": self.address, "value": value}))
        except Exception as exc:
            if is_revert(exc):
                name, fields = decode_revert(self._errors, revert_data(exc))
                raise ChainReverted(op, name, fields) from None
            if isinstance(exc, REFUSALS) and not is_transport(exc):
                raise ChainRefused(f"{op}: the chain refused it, nothing was sent: {exc}") from None
            raise

    def _target(self, op: str) -> Any:
        if op not in TOKEN_WRITES:
            return self.contract
        if self.token_contract is None:
            raise ValueError(f"{op}: this deployment pays in native coin, it has no token")
        return self.token_contract

    def _mark(self, row: int | None, state: str, **fields: Any) -> None:
        if row is not None and self.journal is not None:
            self.journal.update(row, state, **fields)

    def pay(self, op: str, args: list[Any], amount: int) -> TxResult:
        """Send ``op(*args, amount)`` that brings ``amount`` into the contract: as the value on
        native coin; on a token after an ``approve`` of exactly ``amount`` (skipped when the
        allowance already is that, e.g. left by a crash between the two).

        In dry-run mode on a token the approve is what is shown (``would_send['then']`` names
        the call after it): the call itself cannot be estimated before the allowance exists.
        """
        if op not in PAYING:
            raise ValueError(f"{op!r} brings no money in")
        approval = self.approve(amount)
        if approval is not None and approval.dry_run:
            then = {"function": op, "data": self.contract.encode_abi(op, args=[*args, amount])}
            assert approval.would_send is not None
            approval.would_send["then"] = then
            return approval
        return self.send(op, [*args, amount], amount if self.token is None else 0)

    def approve(self, amount: int) -> TxResult | None:
        """Let the contract pull exactly ``amount`` of the token; None when nothing to send."""
        if self.token_contract is None or self.allowance() == amount:
            return None
        return self.send("approve", [self.contract_address, amount])

    def allowance(self) -> int:
        if self.token_contract is None:
            return 0
        fn = self.token_contract.functions.allowance(self.address, self.contract_address)
        return int(fn.call())

    def deposit(self, job: bytes, value: int, cap: int, deadline: int) -> TxResult:
        return self.pay("deposit", [job, cap, deadline], value)

    def end_job(self, job: bytes) -> TxResult:
        return self.send("endJob", [job])

    def withdraw(self, job: bytes) -> TxResult:
        return self.send("withdraw", [job])

    def claim(self, job: bytes, task: bytes, worker: str, cumulative: int, sig: bytes) -> TxResult:
        return self.send("claim", [job, task, Web3.to_checksum_address(worker), cumulative, sig])

    def stake(self, value: int) -> TxResult:
        return self.pay("stake", [], value)

    def request_unstake(self, amount: int) -> TxResult:
        return self.send("requestUnstake", [amount])

    def withdraw_stake(self) -> TxResult:
        return self.send("withdrawStake", [])

    def slash(self, worker: str, amount: int, evidence: bytes, sigs: list[bytes]) -> TxResult:
        return self.send("slash", [Web3.to_checksum_address(worker), amount, evidence, sigs])

    # ------------------------------------------------------------------ reads

    def balance(self, address: str | None = None) -> int:
        """What ``address`` (default: this wallet) holds of the payment asset: the token's
        balance when the deployment has one, else native coin."""
        who = Web3.to_checksum_address(address or self.address)
        if self.token_contract is None:
            return self.chain.balance(who)
        return int(self.token_contract.functions.balanceOf(who).call())

    def gas_balance(self, address: str | None = None) -> int:
        """Native coin of ``address``: what pays for gas (the same as balance() without a token)."""
        return self.chain.balance(address or self.address)

    def job(self, job: bytes) -> dict[str, Any]:
        requester, deadline, unlock_at, closed, cap, deposited, balance = (
            self.contract.functions.jobs(job).call()
        )
        return {
            "requester": requester, "deadline": deadline, "unlock_at": unlock_at,
            "closed": closed, "cap": cap, "deposited": deposited, "balance": balance,
        }  # fmt: skip

    def stake_of(self, address: str | None = None) -> dict[str, int]:
        who = Web3.to_checksum_address(address or self.address)
        bonded, unbonding, unbond_at = self.contract.functions.stakes(who).call()
        return {"bonded": bonded, "unbonding": unbonding, "unbond_at": unbond_at}

    def claimed_of(self, job: bytes, task: bytes, worker: str) -> int:
        fn = self.contract.functions.claimedOf(job, task, Web3.to_checksum_address(worker))
        return int(fn.call())

    def fees_accrued(self) -> int:
        return int(self.contract.functions.feesAccrued().call())

    def params(self) -> dict[str, Any]:
        f = self.contract.functions
        return {
            "treasury": f.treasury().call(),
            "fee_bps": f.feeBps().call(),
            "claim_grace_s": f.claimGrace().call(),
            "unbonding_delay_s": f.unbondingDelay().call(),
            "sentry_min_stake_wei": f.sentryMinStake().call(),
            "slash_quorum": f.slashQuorum().call(),
            "slash_burn_bps": f.slashBurnBps().call(),
            "token": self.token,
        }

    # ------------------------------------------------------------------ recovery

    def reconcile(self) -> list[TxRow]:
        """Finish what a crash or an outage left: receipts for sent rows (rebroadcast when the
        chain never saw them), a fresh attempt for pending ones. Returns the rows still open.

        Raises:
            ChainUnavailable: still unreachable; try again later.
        """
        if self.journal is None:
            return []
        for row in self._rows("sent", "pending"):
            try:
                if row.state == "sent" and row.tx_hash:
                    self._finish_sent(row)
                else:
                    self._execute(row.op, _args(row), row.value_wei, row.id)
            except (ChainReverted, ChainRefused) as exc:  # the row is marked: not retried
                log.warning("journal row %d (%s) ended: %s", row.id, row.op, exc)
        return self._rows("sent", "pending")

    def _finish_sent(self, row: TxRow) -> None:
        assert row.tx_hash is not None
        try:
            self.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            if row.raw_tx:
                self.w3.eth.send_raw_transaction(row.raw_tx)
        except Exception as exc:
            if is_transport(exc):
                raise ChainUnavailable(f"reconcile: chain unreachable ({exc})") from None
            raise
        self._await_receipt(row.op, row.tx_hash, row.id)

    def replay(self) -> tuple[int, int]:
        """Re-run this wallet's mined transactions on a fresh embedded chain, in order.

        Returns:
            (replayed, failed): a row can fail when its outcome depended on chain time.
        """
        if self.journal is None:
            return 0, 0
        done = failed = 0
        for row in self._rows("mined"):
            try:
                self._execute(row.op, _args(row), row.value_wei, None)
                done += 1
            except ChainReverted as exc:
                log.warning("replay of journal row %d (%s) failed: %s", row.id, row.op, exc)
                failed += 1
        return done, failed

    def _rows(self, *states: str) -> list[TxRow]:
        if self.journal is None:
            return []
        return self.journal.rows(
            *states, chain_id=self.chain.chain_id, contract=self.contract_address
        )


def _args(row: TxRow) -> list[Any]:
    """A row's arguments for today's ABI: an old paying row gets its value as the amount."""
    if PAYING.get(row.op) == len(row.args):
        return [*row.args, row.value_wei]
    return row.args
