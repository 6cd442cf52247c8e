"""The anchorer's decisions as a pure machine: when to post an epoch, which dispute to answer,
when an epoch counts as final. Inputs are verified vouchers, chain events and chain time (ms);
outputs are effects for the driver (``node/chain/anchoring.py``) to carry out.

    state    input                                   next     effect
    idle     tick: due, and entries beyond the base  posting  Post(epoch)
    idle     tick: nothing new, last epoch unfinal   idle     Finalize(index)
    posting  posted(index, window end)               pending  -
    posting  post_failed                             idle     - (retried when due)
    pending  disputed(leaf), voucher known           pending  Answer(index, entry, signature)
    pending  disputed(leaf), voucher unknown         pending  - (the anchor will be voided)
    pending  answered(leaf)                          pending  -
    pending  tick: window over, no open dispute      idle     base := epoch; then as idle
    pending  voided                                  idle     base unchanged; entries re-anchored
    idle     adopt(index, epoch | none)              idle     base := another anchorer's epoch

Anything else is a bug and raises. Entries are the latest voucher per (job, task, worker) line;
an epoch holds every line whose amount grew since the base (the last epoch that became final).
In any state a requester's cap (its worker was lost; see ``VoucherCap``) lowers a line to the
cap and keeps it there, but never below what an epoch already anchored.

Memory: only open lines stay in the machine. The lines anchored in full by a final epoch
(:meth:`Anchoring.settled`) are kept by the driver in sqlite, then dropped
(:meth:`Anchoring.settle`); a later voucher for such a line (a resend, or a larger one), or
another anchorer's entry for it, first brings the line's final amount back as its base
(:meth:`Anchoring.restore`). Without this the machine held, and its driver saved at every
step, every line the network ever anchored.

Spends: each requester's largest signed ``Spend`` (it travels with every voucher) bounds what
anchors may debit its pool in all; the contract refuses more. An epoch takes a requester's
lines only if its spend covers what its pool was debited before (the chain's ``debited``, given
to ``on_tick``; by default what this machine anchored) plus this epoch's debit; a requester
whose spend falls short waits for a later epoch (``short`` says who and how much is needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from consensus.errors import Invalid
from consensus.settlement.epoch import Entry, Epoch, Line, Spend, assemble

MAX_PARTY_LINES = 1000  # lines per requester and per worker in one epoch: an answer fits a block
TRANSITIONS = {
    ("idle", "tick"): {"idle", "posting"},
    ("posting", "posted"): {"pending"},
    ("posting", "post_failed"): {"idle"},
    ("pending", "disputed"): {"pending"},
    ("pending", "answered"): {"pending"},
    ("pending", "tick"): {"idle"},
    ("pending", "voided"): {"idle"},
    ("idle", "adopt"): {"idle"},
}


@dataclass(frozen=True)
class Post:
    epoch: Epoch
    spends: dict[bytes, Spend]  # the signed spend of each requester the epoch debits


@dataclass(frozen=True)
class Answer:
    index: int
    entry: Entry
    signature: bytes


@dataclass(frozen=True)
class Finalize:
    index: int


Effect = Post | Answer | Finalize


@dataclass
class Anchoring:
    """One anchorer's view. ``epoch_ms``: how often to post; ``fee_bps``: the contract's fee."""

    epoch_ms: int
    fee_bps: int
    state: str = "idle"
    latest: dict[Line, tuple[Entry, bytes]] = field(default_factory=dict)
    base_lines: dict[Line, int] = field(default_factory=dict)
    base_earnings: dict[bytes, int] = field(default_factory=dict)
    pending: Epoch | None = None
    index: int = -1  # of the pending or latest anchor
    unfinal: bool = False  # the latest epoch is final in our eyes, not yet on chain
    window_end_ms: int = 0
    last_post_ms: int | None = None
    open_disputes: set[bytes] = field(default_factory=set)
    signatures: dict[bytes, bytes] = field(default_factory=dict)  # entry leaf -> its voucher
    caps: dict[Line, int] = field(default_factory=dict)  # lines the requester closed
    spends: dict[bytes, Spend] = field(default_factory=dict)  # the largest per requester
    short: dict[bytes, int] = field(default_factory=dict)  # left out: the spend they need
    anchored: dict[bytes, int] = field(default_factory=dict)  # debited in all by final epochs

    def on_spend(self, spend: Spend) -> None:
        """A requester's spend (its signature checked by the caller); only a larger replaces."""
        known = self.spends.get(spend.requester)
        if known is None or spend.cumulative > known.cumulative:
            self.spends[spend.requester] = spend

    def on_voucher(self, entry: Entry, signature: bytes) -> None:
        """A verified task's voucher (checked by the caller); only a larger amount replaces."""
        known = self.latest.get(entry.line)
        if known is not None and known[0].requester != entry.requester:
            raise Invalid("voucher.requester", "a line cannot change requester")
        if entry.amount > self.caps.get(entry.line, entry.amount):
            raise Invalid("voucher.amount", f"the requester capped this line at "
                          f"{self.caps[entry.line]} wei")  # fmt: skip
        if known is None or entry.amount > known[0].amount:
            self.latest[entry.line] = (entry, signature)

    def cap(self, entry: Entry, signature: bytes) -> None:
        """The requester closed ``entry.line`` at ``entry.amount`` (checked by the caller, with
        ``signature`` its voucher for exactly that amount, empty for 0)."""
        known = self.latest.get(entry.line)
        if known is not None and known[0].requester != entry.requester:
            raise Invalid("cap.requester", "a line cannot change requester")
        floor = self.base_lines.get(entry.line, 0)  # anchored already: too late to lower
        self.caps[entry.line] = max(entry.amount, floor)
        if entry.amount <= floor:
            if known is not None and known[0].amount > floor:
                self.latest[entry.line] = (replace(known[0], amount=floor), known[1])
            return
        if known is None or known[0].amount != entry.amount:
            self.latest[entry.line] = (entry, signature)

    def forget(self, line: Line) -> None:
        """Drops a line that failed verification; what an epoch already anchored stays."""
        known = self.latest.get(line)
        if known is not None and known[0].amount > self.base_lines.get(line, 0):
            if line in self.base_lines:
                entry, sig = known
                self.latest[line] = (replace(entry, amount=self.base_lines[line]), sig)
            else:
                del self.latest[line]

    def on_tick(
        self, now_ms: int, debited: Mapping[bytes, int] | None = None, *, may_post: bool = True
    ) -> list[Effect]:
        """``debited``: the chain's ``pools(r).debited`` of the requesters :meth:`to_post`
        names (any missing: what this machine anchored for them). ``may_post`` False: another
        anchorer holds the chain (``consensus.settlement.following``); a pending epoch of ours
        still becomes final here, but nothing is posted or finalized."""
        if self.state == "posting":
            return []
        if self.state == "pending":
            if now_ms < self.window_end_ms or self.open_disputes:
                return []
            self._go("tick", "idle")
            assert self.pending is not None
            self.base_lines, self.base_earnings = self.pending.lines, self.pending.earnings
            self._count(self.pending)
            self.pending, self.unfinal = None, True
            self.signatures = {}  # they answer disputes of a pending epoch only
        if not may_post:
            return []
        due = self.last_post_ms is None or now_ms >= self.last_post_ms + self.epoch_ms
        fresh = self._covered(self._fresh(), debited or {}) if due or self.unfinal else []
        if fresh:
            self._go("tick", "posting")
            self.last_post_ms = now_ms
            self.pending = assemble(fresh, self.base_lines, self.base_earnings, self.fee_bps)
            # Kept apart: a newer voucher for a line may arrive while this epoch is disputed.
            self.signatures = {e.leaf(): self.latest[e.line][1] for e in self.pending.entries}
            return [Post(self.pending, {r: self.spends[r] for r in self.pending.debits})]
        if self.unfinal:
            self.unfinal = False
            return [Finalize(self.index)]
        return []

    def on_posted(self, index: int, window_end_ms: int) -> None:
        self._go("posted", "pending")
        self.index, self.window_end_ms, self.unfinal = index, window_end_ms, False
        self.open_disputes = set()

    def on_post_failed(self) -> None:
        self._go("post_failed", "idle")
        self.pending = None

    def on_disputed(self, index: int, leaf: bytes) -> list[Effect]:
        self._go("disputed", "pending")
        if index != self.index or self.pending is None:
            return []
        self.open_disputes.add(leaf)
        for entry in self.pending.entries:
            if entry.leaf() == leaf and leaf in self.signatures:
                return [Answer(index, entry, self.signatures[leaf])]
        return []

    def on_answered(self, leaf: bytes) -> None:
        self._go("answered", "pending")
        self.open_disputes.discard(leaf)

    def on_voided(self, index: int) -> None:
        if index != self.index:
            return
        self._go("voided", "idle")
        self.pending, self.open_disputes = None, set()

    def adopt(self, index: int, epoch: Epoch | None, *, finalized: bool = True) -> None:
        """Another anchorer's epoch ``index`` is final on chain, and ``epoch`` is it rebuilt
        (its roots checked by the caller): it becomes our base; None: that epoch was voided,
        and the base stays. ``finalized`` False: its window is over but the chain still says
        pending, so when it is our turn and nothing is new we finalize it (a silent anchorer's
        last epoch must become claimable)."""
        if index <= self.index:
            raise RuntimeError(f"anchoring: adopt epoch {index} after {self.index} is a bug")
        self._go("adopt", "idle")
        if epoch is not None:
            self.base_lines, self.base_earnings = dict(epoch.lines), dict(epoch.earnings)
            self._count(epoch)
            for e in epoch.entries:  # their requesters, so the lines can be kept and let go
                known = self.latest.get(e.line)
                if known is None or known[0].amount < e.amount:
                    self.latest[e.line] = (replace(e, previous=0), b"")
        self.index, self.unfinal = index, not finalized

    def to_post(self, now_ms: int) -> set[bytes]:
        """The requesters whose lines ``on_tick(now_ms)`` would anchor if their spends cover
        them: the driver reads their ``debited`` from the chain first."""
        if self.state == "posting":
            return set()
        base, unfinal = self.base_lines, self.unfinal
        if self.state == "pending":
            if now_ms < self.window_end_ms or self.open_disputes or self.pending is None:
                return set()
            base, unfinal = self.pending.lines, True
        if not (
            unfinal or self.last_post_ms is None or now_ms >= self.last_post_ms + self.epoch_ms
        ):
            return set()
        return {e.requester for e, _ in self.latest.values() if e.amount > base.get(e.line, 0)}

    def _fresh(self) -> list[Entry]:
        """The lines grown since the base, at most MAX_PARTY_LINES per requester and per worker
        (the rest wait for a later epoch): a sum dispute's answer carries all of a party's
        entries of the epoch, and must fit in a block."""
        base = self.base_lines
        grown = [e for e, _ in self.latest.values() if e.amount > base.get(e.line, 0)]
        grown.sort(key=lambda e: e.line)
        count: dict[bytes, int] = {}
        out = []
        for e in grown:
            r, w = (b"r" + e.requester, b"w" + e.worker)
            if count.get(r, 0) < MAX_PARTY_LINES and count.get(w, 0) < MAX_PARTY_LINES:
                count[r], count[w] = count.get(r, 0) + 1, count.get(w, 0) + 1
                out.append(e)
        return out

    def _covered(self, fresh: list[Entry], debited: Mapping[bytes, int]) -> list[Entry]:
        """``fresh`` less the lines of requesters whose spend does not cover their debit."""
        debit: dict[bytes, int] = {}
        for e in fresh:
            debit[e.requester] = (
                debit.get(e.requester, 0) + e.amount - self.base_lines.get(e.line, 0)
            )
        self.short = {}
        for r, amount in debit.items():
            before = debited[r] if r in debited else self._anchored(r)
            held = self.spends.get(r)
            if held is None or held.cumulative < before + amount:
                self.short[r] = before + amount
        return [e for e in fresh if e.requester not in self.short]

    def _anchored(self, requester: bytes) -> int:
        """What the epochs this machine made final (or adopted) debited ``requester`` in all."""
        return self.anchored.get(requester, 0)

    def _count(self, epoch: Epoch) -> None:
        for r, amount in epoch.debits.items():
            self.anchored[r] = self.anchored.get(r, 0) + amount

    def settled(self) -> list[Entry]:
        """The lines the last final epoch anchored in full, each at its final amount: what
        :meth:`settle` may drop once the driver has kept them (for :meth:`restore`). A line
        in an epoch of ours still pending is not one, whatever its voucher says now."""
        base = self.base_lines
        return [
            replace(e, amount=base[line], previous=0)
            for line, (e, _) in self.latest.items()
            if line in base and e.amount <= base[line] and self._outside_pending(line)
        ]

    def settle(self, kept: Iterable[Line]) -> int:
        """Drops the lines of ``kept`` (from :meth:`settled`, now kept by the driver) that are
        still anchored in full; returns how many went. A line that grew meanwhile stays."""
        gone = 0
        for line in kept:
            known = self.latest.get(line)
            base = self.base_lines.get(line, -1)
            if known is not None and known[0].amount <= base and self._outside_pending(line):
                del self.latest[line], self.base_lines[line]
                if self.pending is not None:  # its lines become the base when it is final
                    del self.pending.lines[line]
                gone += 1
        return gone

    def _outside_pending(self, line: Line) -> bool:
        """Whether ``line`` has no entry in our pending epoch (there it has grown)."""
        return self.pending is None or self.pending.lines.get(line) == self.base_lines[line]

    def restore(self, entry: Entry) -> None:
        """``entry``: a line's entry in the last final epoch that anchored it, kept by the
        driver after :meth:`settle` dropped the line. Its amount becomes the line's base again
        (and its latest, if none is known), so a resent voucher is not anchored twice and a
        larger one adds only the difference. Known lines are left alone: memory is newer."""
        line = entry.line
        if line in self.base_lines or line in self.latest:
            return
        self.base_lines[line] = entry.amount
        if self.pending is not None:  # its lines become the base when it is final
            self.pending.lines.setdefault(line, entry.amount)
        self.latest[line] = (replace(entry, previous=0), b"")

    def _go(self, event: str, to: str) -> None:
        allowed = TRANSITIONS.get((self.state, event))
        if allowed is None or to not in allowed:
            raise RuntimeError(f"anchoring: {event} in state {self.state} (to {to}) is a bug")
        self.state = to


def claim_due(final_cumulative: int, claimed: int, threshold_wei: int) -> bool:
    """A worker's claim policy: claim once what it may claim reaches ``threshold_wei``."""
    return final_cumulative - claimed >= max(threshold_wei, 1)
