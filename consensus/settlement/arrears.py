"""Which requesters leave a worker's lines unanchored: the worker's answer to a short spend.

An anchoring sentry posts a requester's lines all or nothing, within the spend the requester
signed (:mod:`consensus.settlement.anchoring`). A requester that signs some worker a spend too
small for its lines therefore stalls all of its lines, ours included, and no anchor says so:
the requester is simply left out of them. What a worker can read on chain for itself is how
many anchors there are and what anchors have debited each requester's pool in all (the
pool's ``debited``). While a line runs, the worker keeps a fresh snapshot of both; the last
one taken before the line ended stays with it. Then::

    an ended line of ours                             its requester
    ------------------------------------------------  ------------------------------------
    shown by an anchor at its amount                  not judged by this line
    ``patience`` or more anchors posted since the     in arrears: we take no more of its
      snapshot, and the pool debited no more than       work until a debit comes
      at the snapshot
    otherwise                                         fine: still within patience, or
                                                        debited since (it is being anchored)

A debit since the snapshot clears the line even when no anchor showed it to us: anchoring of
that requester works, so a missing line is our voucher or the anchor's entries lost on the
way (both are resent), not the requester holding back. A snapshot taken earlier than the end
only widens the window, so the rule can be late but never accuses a requester that was
anchored. A voided anchor lowers ``debited``; a void and a re-anchor between two snapshots
can hide a debit, so such a requester stays judged until its next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """One task attempt's voucher, ended, as the worker keeps it.

    Attributes:
        requester: the requester's chain address, lower-case ``0x`` hex.
        peer: the requester's peer id ("" if not known).
        amount_wei: the voucher's amount.
        shown_wei: the largest amount an anchor on chain showed for this line (0: none seen).
        anchors_before: how many anchors were on chain at the line's last snapshot.
        debited_before: the requester pool's ``debited`` at that snapshot.
    """

    requester: str
    peer: str
    amount_wei: int
    shown_wei: int
    anchors_before: int
    debited_before: int


@dataclass(frozen=True)
class Arrears:
    """A requester whose pool no anchor debited while our lines waited ``anchors`` anchors."""

    requester: str
    peers: frozenset[str]
    waiting_wei: int  # our unanchored lines' amounts, less what anchors showed of them
    anchors: int  # posted since the oldest snapshot of those lines

    def reason(self) -> str:
        return (
            f"requester {self.requester} in arrears: {self.waiting_wei} wei of ours unanchored "
            f"through {self.anchors} anchors that did not debit it"
        )


def in_arrears(
    lines: Iterable[Line], debited: Mapping[str, int], anchors: int, patience: int
) -> dict[str, Arrears]:
    """The requesters in arrears to us, by address.

    Args:
        lines: our ended lines (any order).
        debited: each requester's pool ``debited`` now (a requester missing is not judged).
        anchors: how many anchors are on chain now.
        patience: anchors without a debit before a requester is in arrears (0: never).
    """
    if patience <= 0:
        return {}
    overdue: dict[str, list[Line]] = {}
    for line in lines:
        now = debited.get(line.requester)
        if (
            now is not None
            and line.shown_wei < line.amount_wei
            and anchors - line.anchors_before >= patience
            and now <= line.debited_before
        ):
            overdue.setdefault(line.requester, []).append(line)
    return {
        requester: Arrears(
            requester=requester,
            peers=frozenset(line.peer for line in held if line.peer),
            waiting_wei=sum(line.amount_wei - line.shown_wei for line in held),
            anchors=anchors - min(line.anchors_before for line in held),
        )
        for requester, held in overdue.items()
    }
