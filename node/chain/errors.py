"""What can go wrong on the chain: the contract said no, or the chain could not be reached."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable


class ChainError(Exception):
    """Base of settlement errors."""


class ChainReverted(ChainError):
    """The contract refused the call; ``error`` is its custom error, decoded."""

    def __init__(self, op: str, error: str, args: dict[str, object] | None = None) -> None:
        self.op = op
        self.error = error
        self.args_ = dict(args or {})
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.args_.items())
        super().__init__(f"{op} reverted: {error}({shown})")


class ChainRefused(ChainError):
    """The chain's node refused the transaction before anything was sent, for a reason of
    the account's (most often: it cannot pay the value and the gas). Nothing was sent, and the
    journal row, if any, is marked failed: no later replay sends it."""


class ChainUnavailable(ChainError):
    """The endpoint did not answer (retryable: nothing was lost, the journal keeps the intent).

    ``journal_id`` names the journal row left open, when there is one.
    """

    def __init__(self, message: str, journal_id: int | None = None) -> None:
        super().__init__(message)
        self.journal_id = journal_id


class ChainMisconfigured(ChainError):
    """The endpoint is not the chain or the contract the config names."""


class DisputeRefused(Exception):
    """A dispute asked for by hand that cannot be made: the epoch is not pending, its window
    has closed, or no such entry of ours was heard."""


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


async def survive(step: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """Runs one step of a settlement service's poll loop; a failure is logged, never fatal.

    The services keep their state in sqlite and on chain, so the next poll retries from there:
    a chain error (an outage, a revert) or anything unexpected (an odd anchor, a wallet short
    of coin) must not stop the node's settlement.
    """
    try:
        await step()
    except ChainError as exc:
        log.warning("%s: %s", what, exc)
    except Exception as exc:
        log.warning("%s step failed: %r", what, exc)
