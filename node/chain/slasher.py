"""Slashing on sentries (``sentry/slashing``): failing verdicts in, one ``slash`` per cheat.

A sentry that fails a task signs the contract's ``Slash(worker, amount, evidence)`` digest with
its wallet key and sends the signature inside its gossiped :class:`Verdict` (``slash_sig``),
where ``evidence`` is the attestation's id (the same for every sentry judging it, so their
signatures combine, and the contract's ``evidenceUsed`` stops a second slash for it) and
``amount`` is ``verify.slash_wei`` (a network agrees on it, or the signatures never meet).

Every sentry collects those signatures per (worker, amount, evidence). Once the contract's
``slashQuorum`` of distinct signers is reached, the signer with the lowest address sends the
``slash`` (signatures ordered by address, as the contract wants); the others leave it, so the
gas is paid once. The contract itself checks each signer's stake, burns part of the slashed
amount and pays the rest to the signers: sentries earn from catching cheats.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from web3 import Web3

from consensus.errors import Invalid
from consensus.settlement.eip712 import slash_digest
from consensus.verify.messages import Verdict
from node.chain.errors import ChainError, ChainReverted
from node.chain.horizon import drop_before
from node.chain.services import SLASH_CASES_KEPT_MS
from node.chain.signing import recover

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.chain.node import ChainNode
    from node.market.net import MarketNet

log = logging.getLogger(__name__)
Case = tuple[bytes, int, bytes]  # (worker address, amount, evidence)


class Slasher:
    def __init__(
        self,
        chain: ChainNode,
        net: MarketNet,
        topic: str,
        stored: Callable[[], Awaitable[list[Verdict]]] | None = None,
    ) -> None:
        """``stored``: failing verdicts kept in sqlite, read once at start, so a sentry
        restarted between two sentries' verdicts still completes the case (the cases
        themselves are only in memory)."""
        self.chain, self.net, self.topic, self.stored = chain, net, topic, stored
        self.quorum = self.min_stake = 0  # the contract's, read at start
        # Kept for as long as a restarted slasher reads its verdicts back (the oldest first):
        # an open case -> signer -> signature, and when it opened; a case sent (or found used
        # by another's slash) -> when, so its late verdicts cost no chain call.
        self.cases: dict[Case, dict[str, bytes]] = {}
        self.opened_ms: dict[Case, int] = {}
        self.sent: dict[Case, int] = {}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        params = await self.chain.service.call(lambda c: c.params())
        self.quorum = int(params["slash_quorum"])
        self.min_stake = int(params["sentry_min_stake_wei"])
        inbox = await self.net.subscribe(self.topic, frozenset({Verdict.KIND}))
        await self.resume()
        task_status.started()
        async for message in inbox:
            await self._on_verdict(message.opened.body)

    async def resume(self) -> None:
        """Collects the failing verdicts kept in sqlite (sending a slash now due)."""
        for verdict in [] if self.stored is None else await self.stored():
            await self._on_verdict(verdict)

    async def _on_verdict(self, verdict: object) -> None:
        if isinstance(verdict, Verdict) and not verdict.passed and verdict.slash_sig:
            try:
                await self.on_failing(verdict)
            except ChainError as exc:  # the next failing verdict of the case retries
                log.warning("slashing: %s", exc)

    async def _staked(self, signer: str) -> bool:
        stake = await self.chain.service.call(lambda c: c.stake_of(signer))
        return int(stake["bonded"]) >= self.min_stake

    async def on_failing(self, v: Verdict) -> bool:
        """Adds ``v``'s signature to its case; sends the slash when it is this node's turn."""
        case = (v.worker_address, int(v.slash_wei), v.attestation)
        self._forget_old(self.net.now_ms())
        if case in self.sent or not await self._collect(case, v):
            return False
        signers = self.cases[case]
        chosen = sorted(signers)[: self.quorum]
        if len(chosen) < self.quorum:
            return False
        if chosen[0] != self.chain.address.lower():
            return False  # the lowest signer sends it
        opened = self.opened_ms.pop(case)
        del self.cases[case]
        self.sent[case] = self.net.now_ms()  # before the send: verdicts heard meanwhile wait
        try:
            return await self._send(case, [signers[s] for s in chosen], v.ref.text())
        except ChainError:  # not sent: the case stays open for the next verdict to retry
            del self.sent[case]
            self.cases[case], self.opened_ms[case] = signers, opened
            raise

    def _forget_old(self, now: int) -> None:
        """Drops cases opened or sent longer ago than a restart would read them back."""
        horizon = now - SLASH_CASES_KEPT_MS
        for case in drop_before(self.opened_ms, horizon):
            del self.cases[case]
        drop_before(self.sent, horizon)

    async def _collect(self, case: Case, v: Verdict) -> bool:
        """Keeps the verdict's signature if it is a staked sentry's over exactly ``case``."""
        try:
            signer = recover(slash_digest(self.chain.domain, *case), v.slash_sig).lower()
        except Invalid as exc:
            log.info("slashing: signature refused", extra={"task": v.ref.text(), "error": str(exc)})
            return False
        if signer not in self.cases.get(case, {}) and not await self._staked(signer):
            log.info("slashing: signer is no staked sentry", extra={"signer": signer})
            return False  # or a stranger's signature could take a quorum seat and spoil it
        if case not in self.cases:  # opened by a staked signer only: strangers open none
            self.opened_ms[case] = self.net.now_ms()
        self.cases.setdefault(case, {})[signer] = v.slash_sig
        return True

    async def _send(self, case: Case, sigs: list[bytes], task: str) -> bool:
        used = await self.chain.service.call(
            lambda c: bool(c.contract.functions.evidenceUsed(case[2]).call())
        )
        if used:
            return False
        worker = Web3.to_checksum_address(case[0])
        try:
            await self.chain.service.submit("slash", [worker, case[1], case[2], sigs])
        except ChainReverted as exc:  # e.g. a stake withdrawn meanwhile: the contract decides
            log.warning("slashing refused by the contract: %s", exc)
            return False
        log.info("worker slashed", extra={
            "worker": worker, "wei": str(case[1]), "task": task, "signers": len(sigs),
        })  # fmt: skip
        return True
