"""A look at stake on chain, a requester's at its bidders' and every node's at the peers that
say they are sentries (:mod:`node.chain.sentry_set`): whose it is, and how much is bonded.

A worker with nothing staked can cheat with nothing to lose: sentries would catch it, but
their slash would take nothing. A requester that settles on chain therefore asks each bidder
for ``chain.min_worker_stake_wei`` of bonded stake (the auction refuses less, saying so).

A bid names the chain account the worker is paid at; any account's stake is public, so the
bid must also carry that account's wallet signature binding it to the bidder's peer id
(:func:`node.identity.wallet_binding`), or a worker could point at a stranger's stake. The same
account must then sign the worker's attestation, which is what sentries slash
(:mod:`node.verify.requester` checks that).

Sentries likewise: a node that settles knows as sentries only peers whose hello binds a
chain account with the contract's sentry minimum bonded there (:mod:`node.chain.sentry_set`),
and only known sentries' verdicts count, or anyone could run a "sentry" that passes its own
cheats.

Stake is read from the contract at most once a minute per account: bids come many per job,
and stake moves rarely. A chain outage leaves the last reading in use; an account never read
counts as unknown, which the auction treats as no stake.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from node.identity import wallet_binding_ok

if TYPE_CHECKING:
    from node.chain.node import ChainNode

log = logging.getLogger(__name__)
STAKE_FRESH_MS = 60_000  # a reading younger than this is used without asking the chain
ACCOUNTS_KEPT = 4096  # readings and checked bindings: the bidders of the last many auctions
K = TypeVar("K")
V = TypeVar("V")


class UnboundAddress(ValueError):
    """A bid's chain account is not bound to its bidder: a forged or malformed claim."""


@dataclass
class Stakes:
    """Checks a peer's binding to its chain account, and reads that account's stake.

    Args:
        chain: the node's chain.
        min_wei: the bonded stake the auction asks of a bidder (``chain.min_worker_stake_wei``);
            0 for sentries, whose minimum is the contract's (:mod:`node.chain.sentry_set`
            compares it).
        now_ms: the node's clock.
    """

    chain: ChainNode
    min_wei: int
    now_ms: Callable[[], int]
    whom: str = "bidder"  # in the reason an unbound account is refused with
    _bound: OrderedDict[tuple[str, str, bytes], None] = field(default_factory=OrderedDict)
    _read: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)  # at, wei

    async def stake_of(self, peer: str, address: str, binding_sig: bytes) -> int | None:
        """The bonded stake of ``peer``'s chain account, None when the chain never answered.

        Raises:
            UnboundAddress: ``binding_sig`` is not ``address``'s binding to ``peer``.
        """
        self._check_binding(peer, address, binding_sig)
        seen = self._read.get(address)
        if seen is not None and self.now_ms() - seen[0] < STAKE_FRESH_MS:
            return seen[1]
        try:
            stake = await self.chain.service.call(lambda c: c.stake_of(address))
        except Exception as exc:  # an outage (web3 raises the transport's own errors): the
            # last reading stands, if there is one
            log.info("stake not read", extra={"address": address, "error": str(exc)})
            return None if seen is None else seen[1]
        _keep(self._read, address, (self.now_ms(), int(stake["bonded"])))
        return int(stake["bonded"])

    def _check_binding(self, peer: str, address: str, binding_sig: bytes) -> None:
        key = (peer, address, binding_sig)
        if key in self._bound:
            self._bound.move_to_end(key)
            return
        try:
            raw = bytes.fromhex(address.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) != 20 or not wallet_binding_ok(peer, raw, binding_sig):
            raise UnboundAddress(f"chain account {address} is not bound to the {self.whom}")
        _keep(self._bound, key, None)


def _keep(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > ACCOUNTS_KEPT:
        cache.popitem(last=False)
