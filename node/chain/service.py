"""Settlement under trio: one chain thread, start-up checks, retries with backoff.

web3's asynchronous provider is asyncio-only, so the synchronous client runs in a worker thread;
a capacity limiter of one keeps every chain call (and eth-tester, which is not thread-safe) in
order. A chain outage makes :meth:`ChainService.submit` wait and retry; the journal row it left
open is finished by ``reconcile``, so nothing is sent twice and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio
from eth_account import Account
from eth_utils.abi import function_abi_to_4byte_selector
from web3 import Web3

from config.schema import TEST_TOKEN, ChainSettings
from node.chain import artifacts
from node.chain.backend import Chain, DeployParams
from node.chain.client import Settlement, TxResult
from node.chain.errors import ChainMisconfigured, ChainReverted, ChainUnavailable
from node.chain.journal import Journal
from node.chain.token import deploy_test_token, mint, token_of

if TYPE_CHECKING:
    from eth_typing import ABIFunction

log = logging.getLogger(__name__)
T = TypeVar("T")
FAUCET_WEI = 10_000 * 10**18  # what the embedded chain gives a node's wallet on every start


def open_settlement(
    settings: ChainSettings,
    key: bytes,
    db_path: Path | None,
    params: DeployParams | None = None,
) -> Settlement:
    """Connect as ``settings`` say; synchronous (run it in the chain thread).

    Embedded: a fresh in-process EVM, the contract deployed at its fixed address (with
    ``chain.token = "test"`` the test token first, then a contract that pays in it), the wallet
    funded (coin, and test tokens), then this node's journal replayed. RPC: the chain id, the
    contract and its payment token checked, then whatever the journal left open reconciled; its
    epoch events are kept in ``db_path`` between runs.

    Raises:
        ChainUnavailable: the endpoint does not answer.
        ChainMisconfigured: wrong chain id, no settlement contract at ``settings.contract``, or
            one that pays in another asset than ``settings.token``.
    """
    artifact = artifacts.load()
    journal = Journal(db_path) if db_path is not None else None
    if settings.backend == "embedded":
        chain = Chain.embedded()
        wallet = Account.from_key(key).address
        params = params or DeployParams()
        if settings.token == TEST_TOKEN:
            params = dataclasses.replace(params, token=deploy_test_token(chain))
        address = chain.deploy(artifact, params)
        chain.fund(wallet, FAUCET_WEI)
        if params.token is not None:
            mint(chain, params.token, wallet, FAUCET_WEI)
        client = Settlement(
            chain, artifact, address, key, journal=journal, dry_run=settings.dry_run
        )
        done, failed = client.replay()
        log.info("embedded chain rebuilt: %d transactions replayed, %d failed", done, failed)
        return client
    chain = Chain.rpc(settings.rpc_url, settings.chain_id)
    check_contract(chain, artifact, settings.contract, settings.token, settings.from_block)
    client = Settlement(
        chain, artifact, settings.contract, key, journal=journal, dry_run=settings.dry_run,
        from_block=settings.from_block, log_span=settings.log_span,
        events_db=db_path,  # kept between runs: an rpc chain's blocks stay what they were
    )  # fmt: skip
    if not settings.dry_run:
        client.reconcile()
    return client


def check_contract(
    chain: Chain, artifact: artifacts.Artifact, address: str, token: str = "", from_block: int = 0
) -> None:
    """Refuse an address that holds no settlement contract (typo, wrong network), one that
    pays in another asset than ``token`` (chain.token: empty for native coin), or a
    ``from_block`` (chain.from_block) the chain has not reached."""
    where = Web3.to_checksum_address(address)
    _check_from_block(chain, where, from_block)
    if not chain.w3.eth.get_code(where):
        raise ChainMisconfigured(f"chain.contract {address}: no contract on chain {chain.chain_id}")
    contract = chain.w3.eth.contract(address=where, abi=artifact.abi)
    try:
        typehash = bytes(contract.functions.VOUCHER_TYPEHASH().call())
    except Exception as exc:
        raise ChainMisconfigured(f"chain.contract {address}: not a settlement contract") from exc
    expected = Web3.keccak(
        text="Voucher(bytes32 job,bytes32 task,address worker,uint256 cumulative)"
    )
    if typehash != bytes(expected):
        raise ChainMisconfigured(f"chain.contract {address}: another version of the contract")
    missing = missing_functions(bytes(chain.w3.eth.get_code(where)), artifact.abi)
    if missing:
        raise ChainMisconfigured(
            f"chain.contract {address}: another version of the contract, without "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: deploy this "
            "version's contract and set chain.contract to it"
        )
    try:
        actual = token_of(contract)
    except Exception as exc:  # deployed before payment tokens: native coin only
        old = f"chain.contract {address}: an older version of the contract (no payment token)"
        raise ChainMisconfigured(old) from exc
    wanted = Web3.to_checksum_address(token) if token else None
    if actual != wanted:
        raise ChainMisconfigured(
            f"chain.token is {token or 'empty (native coin)'} but chain.contract {address} "
            f"pays in {actual or 'native coin'}"
        )


def missing_functions(code: bytes, abi: list[dict[str, Any]]) -> list[str]:
    """The functions of ``abi`` whose selectors ``code`` never pushes: a contract deployed from
    other sources (an older version would revert this node's newer calls, say a watcher's
    ``disputeEntries``, only when first sent). Solidity's dispatcher compares the call's
    selector with each function's, pushed as a constant: PUSH4, or shorter when the selector
    starts with zero bytes."""
    out = []
    for f in abi:
        if f.get("type") != "function":
            continue
        selector = bytes(function_abi_to_4byte_selector(cast("ABIFunction", f))).lstrip(b"\0")
        if bytes([0x5F + len(selector)]) + selector not in code:
            out.append(str(f["name"]))
    return out


class ChainService:
    """Owns the chain thread. ``await service.call(lambda s: s.balance())`` runs in it."""

    def __init__(
        self,
        factory: Callable[[], Settlement],
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        on_unavailable: Callable[[ChainUnavailable], None] | None = None,
    ) -> None:
        self._factory = factory
        self._on_unavailable = on_unavailable or (lambda exc: None)
        self._limiter = trio.CapacityLimiter(1)
        self._client: Settlement | None = None
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s

    async def start(self) -> Settlement:
        self._client = await self._thread(self._factory)
        return self._client

    @property
    def client(self) -> Settlement:
        if self._client is None:
            raise RuntimeError("ChainService.start() has not run")
        return self._client

    async def call(self, fn: Callable[[Settlement], T]) -> T:
        client = self.client
        return await self._thread(lambda: fn(client))

    async def submit(self, op: str, args: list[Any], value: int = 0) -> TxResult | None:
        """Send ``op`` and wait until it is mined, however long the chain is away.

        Returns the result, or None when an outage interrupted it and ``reconcile`` finished it
        (its receipt is in the journal).

        Raises:
            ChainReverted: the contract refused it.
        """
        return await self._ride_out(lambda c: c.send(op, args, value))

    async def pay(self, op: str, args: list[Any], amount: int) -> TxResult | None:
        """:meth:`submit` for a write that brings ``amount`` in (``Settlement.pay``: on a token
        an approve, then the call). After an outage the call is still made when only the
        approve had gone through (the allowance is still ``amount``: no pull has used it)."""
        sent = await self._ride_out(lambda c: c.pay(op, args, amount))
        if sent is not None:
            return sent
        if await self.call(lambda c: c.token is not None and c.allowance() == amount > 0):
            return await self.pay(op, args, amount)
        return None

    async def _ride_out(self, send: Callable[[Settlement], TxResult]) -> TxResult | None:
        """``send``'s result, or None once an outage that interrupted it has been reconciled."""
        try:
            return await self.call(send)
        except ChainUnavailable as exc:
            log.warning("chain unavailable, will retry: %s", exc)
            self._on_unavailable(exc)
            await self._reconcile_until_done(exc.journal_id)
            return None

    async def reconcile_until_done(self) -> None:
        """Waits, retrying with backoff, until the journal has nothing open."""
        await self._reconcile_until_done(None)

    async def _reconcile_until_done(self, row: int | None) -> None:
        delay = self.retry_base_s
        while True:
            await trio.sleep(delay)
            try:
                open_rows = await self.call(lambda c: c.reconcile())
            except ChainUnavailable as exc:
                log.warning("chain still unavailable: %s", exc)
                self._on_unavailable(exc)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if (row is None and not open_rows) or (
                row is not None and all(r.id != row for r in open_rows)
            ):
                return

    async def _thread(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn), limiter=self._limiter)


__all__ = ["ChainReverted", "ChainService", "ChainUnavailable", "open_settlement"]


def _check_from_block(chain: Chain, contract: str, from_block: int) -> None:
    """Refuse a ``from_block`` the chain has not reached, or one after the deployment (the
    contract already had code a block before it: its first events would be missed). A
    provider that keeps no old state cannot answer the second question; then it is skipped."""
    latest = int(chain.w3.eth.block_number)
    if from_block > latest:
        raise ChainMisconfigured(
            f"chain.from_block {from_block} is past chain {chain.chain_id}'s latest block "
            f"{latest}: set it to the block chain.contract was deployed in"
        )
    if from_block == 0:
        return
    try:
        before = chain.w3.eth.get_code(contract, block_identifier=from_block - 1)  # type: ignore[arg-type]
    except Exception as exc:  # a pruned node refuses old state; that is all
        log.info("chain.from_block not checked: %s", str(exc)[:200])
        return
    if before:
        raise ChainMisconfigured(
            f"chain.from_block {from_block} is after chain.contract's deployment (it had code "
            f"at block {from_block - 1}): its earlier events would be missed; set the block "
            "of the deployment transaction"
        )
