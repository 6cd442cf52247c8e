"""The requester's side of the dispute game, pure: which anchored entries to dispute, and what to
do next with each dispute as the chain moves.

Which entries (:func:`disputable`): an entry names a requester, a line (job, task attempt,
worker) and a cumulative amount. The requester compares it with what it knows it signed:

    reason        the entry                                   can the anchorer answer?
    never signed  a line we signed no voucher on               no: no voucher of ours exists
    above signed  more than the largest voucher we signed      no: none for that amount
    above cap     more than the cap we put on the line         yes, if it holds our voucher

A voucher signature published with the entry (checked by the caller: it must be ours, for
exactly that amount) proves we signed that amount even when our own records lag (a voucher
whose reply never came back), so such an entry is neither 'never signed' nor 'above signed'.
Above a cap it is still reported, marked ``answerable``: the contract knows vouchers, not caps,
and would take the answer; disputing it only costs gas on both sides.

What next (:func:`next_step`), one dispute at a time:

    state     the chain says                                 next      action
    found     our dispute is on chain already                disputed  -
    found     the anchor is pending, its window open         found     Dispute
    found     anything else (window closed, anchor moved)    missed    -
    disputed  the epoch was voided (by us or anyone)         voided    -
    disputed  the dispute was cleared: answered              answered  -
    disputed  the answer time is over, anchor still pending  disputed  Void
    disputed  otherwise: the anchorer may still answer       disputed  -

``answered``, ``voided`` and ``missed`` are final. Every action is idempotent on chain (a second
dispute or void of the same leaf reverts before anything is sent), so a driver that crashes
between an action and saving its outcome asks the chain again and moves on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from eth_abi.abi import encode
from eth_hash.auto import keccak

from consensus.settlement.epoch import Entry, Line

NEVER_SIGNED = "never signed"
ABOVE_SIGNED = "above signed"
ABOVE_CAP = "above cap"
FINAL_STATES = frozenset({"answered", "voided", "missed"})


@dataclass(frozen=True)
class Finding:
    """An entry to dispute, and why."""

    entry: Entry
    reason: str  # NEVER_SIGNED | ABOVE_SIGNED | ABOVE_CAP
    detail: str
    answerable: bool = False  # the anchorer showed our voucher for exactly this amount


def disputable(
    entries: Iterable[Entry],
    requester: bytes,
    signed: Mapping[Line, int],
    caps: Mapping[Line, int],
    shown: Set[bytes] = frozenset(),
) -> list[Finding]:
    """The entries naming ``requester`` that it did not agree to.

    Args:
        entries: an anchored epoch's entries (others' are skipped).
        requester: our 20-byte address.
        signed: the largest voucher we signed per line (a line with 0 was never signed).
        caps: lines we closed at a lower amount (``VoucherCap``).
        shown: leaves whose entry came with our valid voucher signature for exactly its amount.
    """
    found = []
    for e in entries:
        if e.requester != requester:
            continue
        finding = _judge(e, signed.get(e.line, 0), caps.get(e.line), e.leaf() in shown)
        if finding is not None:
            found.append(finding)
    return found


def _judge(e: Entry, signed: int, cap: int | None, shown: bool) -> Finding | None:
    if shown:
        signed = max(signed, e.amount)
    where = f"job 0x{e.job.hex()} task 0x{e.task.hex()} worker 0x{e.worker.hex()}"
    if signed <= 0:
        return Finding(e, NEVER_SIGNED, f"{e.amount} wei on {where}: we never signed this line")
    if e.amount > signed:
        return Finding(e, ABOVE_SIGNED, f"{e.amount} wei on {where}: we signed at most {signed}")
    if cap is not None and e.amount > cap:
        return Finding(
            e, ABOVE_CAP, f"{e.amount} wei on {where}: we capped it at {cap}", answerable=shown
        )
    return None


def dispute_key(index: int, leaf: bytes) -> bytes:
    """The contract's ``disputes`` key: ``keccak256(abi.encode(uint64 epoch, bytes32 leaf))``."""
    return keccak(encode(["uint64", "bytes32"], [index, leaf]))


@dataclass(frozen=True)
class ChainView:
    """What the chain says about one dispute's epoch, read by the driver.

    Attributes:
        latest: the latest anchor's epoch index; ``state`` and ``deadline`` (its dispute window
            end, chain seconds) are that anchor's.
        answer_by: the contract's ``disputes`` entry for our leaf (0: none, or answered).
        voided: the dispute's epoch was voided.
        now: chain time, seconds.
    """

    latest: int
    state: str
    deadline: int
    answer_by: int
    voided: bool
    now: int


def next_step(state: str, epoch: int, view: ChainView) -> tuple[str, str | None]:
    """``(next state, action)`` for a dispute of an entry of ``epoch``; the action is
    ``"dispute"``, ``"void"`` or None. See the table at the top.

    Raises:
        ValueError: an unknown or final state (a bug of the caller).
    """
    if state == "found":
        if view.answer_by:
            return "disputed", None
        window_open = view.state == "pending" and view.now < view.deadline
        return ("found", "dispute") if view.latest == epoch and window_open else ("missed", None)
    if state == "disputed":
        if view.voided:
            return "voided", None
        if not view.answer_by:
            return "answered", None
        if view.latest == epoch and view.state == "pending" and view.now >= view.answer_by:
            return "disputed", "void"
        return "disputed", None
    raise ValueError(f"dispute state {state!r} has no next step")
