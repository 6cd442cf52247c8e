"""The epoch path's calls on the settlement contract: pools, anchors, disputes, claims.

A mixin of :class:`node.chain.client.Settlement`, which supplies the journaled ``send`` and
``pay`` and the contract; kept apart so the client's transaction machinery stays one idea.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eth_typing import ChecksumAddress
from web3 import Web3

from consensus.settlement.disputes import dispute_key
from consensus.settlement.epoch import Entry, Epoch, Spend
from consensus.settlement.following import ChainAnchor
from consensus.settlement.leaves import PayoutBatch

if TYPE_CHECKING:
    from node.chain.client import TxResult
    from node.chain.logs import ContractEvents


class EpochCalls:
    """Needs ``send``, ``pay``, ``contract``, ``address`` and ``w3`` from its host class."""

    contract: Any
    address: ChecksumAddress
    w3: Web3
    event_log: ContractEvents

    def events(self, name: str, **where: Any) -> list[Any]:
        """The contract's ``name`` events whose arguments equal ``where``'s, since
        chain.from_block (the deployment's block): scanned once and kept
        (:mod:`node.chain.logs`)."""
        return self.event_log.of(name, **where)

    def send(self, op: str, args: list[Any], value: int = 0) -> TxResult:
        raise NotImplementedError

    def pay(self, op: str, args: list[Any], amount: int) -> TxResult:
        raise NotImplementedError

    def fund(self, value: int) -> TxResult:
        return self.pay("fund", [], value)

    def leave_pool(self, amount: int) -> TxResult:
        return self.send("leavePool", [amount])

    def withdraw_pool(self) -> TxResult:
        return self.send("withdrawPool", [])

    def post_anchor(self, epoch: Epoch, spends: Mapping[bytes, Spend]) -> TxResult:
        """Posts ``epoch``; each requester it debits needs its signed spend in ``spends``.

        Raises:
            KeyError: a requester of the epoch without a spend (our bug: nothing is sent).
        """
        held = [spends[r] for r in epoch.debits]
        requesters = [Web3.to_checksum_address(r) for r in epoch.debits]
        amounts = list(epoch.debits.values())
        args = [epoch.earnings_tree.root, epoch.entries_tree.root, requesters, amounts,
                [s.cumulative for s in held], [s.signature for s in held]]  # fmt: skip
        return self.send("postAnchor", args)

    def finalize(self, index: int) -> TxResult:
        return self.send("finalize", [index])

    def dispute(self, index: int, entry: Entry, proof: list[bytes]) -> TxResult:
        return self.send("dispute", [index, entry_args(entry), proof])

    def answer(self, index: int, entry: Entry, sig: bytes) -> TxResult:
        return self.send("answer", [index, entry_args(entry), sig])

    def void_anchor(
        self, index: int, entry: Entry, debits: Mapping[bytes, int] | Sequence[tuple[str, int]]
    ) -> TxResult:
        """Void with ``debits`` exactly as posted (a mapping, or the posted pairs in order)."""
        pairs = list(debits.items()) if isinstance(debits, Mapping) else list(debits)
        requesters = [Web3.to_checksum_address(r) for r, _ in pairs]
        amounts = [a for _, a in pairs]
        return self.send("voidAnchor", [index, entry_args(entry), requesters, amounts])

    def claim_earnings(self, cumulative: int, proof: list[bytes]) -> TxResult:
        return self.send("claimEarnings", [cumulative, proof])

    def payout(self, batch: PayoutBatch) -> TxResult:
        """Pay ``batch``'s workers their final earnings (anyone may; sentries do)."""
        return self.send("payout", payout_args(batch))

    def earned_by(self, workers: Sequence[bytes]) -> dict[bytes, int]:
        """What each of ``workers`` received from final epochs so far."""
        return {w: self.earned_of("0x" + w.hex()) for w in workers}

    def pool_of(self, address: str | None = None) -> dict[str, int]:
        """``debited``: what anchors took from the pool in all (less voided ones), which the
        requester's signed spend bounds."""
        who = Web3.to_checksum_address(address or self.address)
        balance, debited, leaving, leave_at = self.contract.functions.pools(who).call()
        return {"balance": balance, "debited": debited, "leaving": leaving, "leave_at": leave_at}

    def anchor(self) -> dict[str, Any]:
        """The latest anchor (epoch ``epoch_count() - 1``); older ones are in the events."""
        f = self.contract.functions.pending().call()
        states = ("none", "pending", "final", "void")
        return {
            "epoch": self.epoch_count() - 1, "earnings_root": bytes(f[0]),
            "entries_root": bytes(f[1]), "anchorer": f[3], "dispute_deadline": f[4],
            "open_disputes": f[5], "state": states[f[6]], "total": f[9], "posted_at": f[8],
            "open_until": max(f[4], f[7]),  # a sum answer keeps entries disputable longer
        }  # fmt: skip

    def answer_by(self, index: int, leaf: bytes) -> int:
        """When the anchorer must answer our dispute of ``leaf`` (0: none open, or answered)."""
        at = int(self.contract.functions.disputes(dispute_key(index, leaf)).call())
        return 0 if at == 2**64 - 1 else at  # the contract marks an answered one so

    def voided(self, index: int) -> bool:
        return bool(self.events("Voided", epoch=index))

    def anchor_debits(self, index: int) -> list[tuple[str, int]]:
        """The (requester, amount) pairs anchor ``index`` debited, in posted order, read from
        its ``Anchored`` event (the contract keeps only their hash, which a void must match).

        Raises:
            LookupError: no such anchor.
        """
        logs = self.events("Anchored", epoch=index)
        if not logs:
            raise LookupError(f"no anchor {index} on chain")
        a = logs[-1]["args"]
        return [(str(r), int(x)) for r, x in zip(a["requesters"], a["amounts"], strict=True)]

    def earned_of(self, address: str | None = None) -> int:
        who = Web3.to_checksum_address(address or self.address)
        return int(self.contract.functions.earned(who).call())

    def epoch_count(self) -> int:
        return int(self.contract.functions.epochCount().call())

    def anchors_after(self, index: int, now_s: int) -> list[ChainAnchor]:
        """The latest anchor, and before it every one after epoch ``index``, oldest first, as
        the chain shows them now. One before the latest that was not voided is final (the next
        post finalized it); so is the latest once its window is over with no dispute open (the
        next post will finalize it, and nothing can void it any more). ``now_s``: the chain's
        time. Events are read only when there is an anchor between ``index`` and the latest."""
        last = self.anchor()
        latest = int(last["epoch"])
        if latest < 0:
            return []
        state = last["state"]
        if state == "pending" and now_s >= last["open_until"] and not last["open_disputes"]:
            state = "final"
        out = [ChainAnchor(
            index=latest, anchorer=bytes.fromhex(last["anchorer"][2:]),
            earnings_root=last["earnings_root"], entries_root=last["entries_root"], state=state,
            posted_ms=int(last["posted_at"]) * 1000,  # not the deadline less a window: a
            # leaves answer moves the deadline on
            finalized=last["state"] != "pending",
            deadline_ms=int(last["dispute_deadline"]) * 1000,
        )]  # fmt: skip
        if latest <= index + 1:
            return out
        voided = {int(v["args"]["epoch"]) for v in self.events("Voided")}
        for log in self.events("Anchored"):
            epoch = int(log["args"]["epoch"])
            if not index < epoch < latest:
                continue
            block = self.w3.eth.get_block(log["blockNumber"])
            out.append(ChainAnchor(
                index=epoch, anchorer=bytes.fromhex(log["args"]["anchorer"][2:]),
                earnings_root=bytes(log["args"]["earningsRoot"]),
                entries_root=bytes(log["args"]["entriesRoot"]),
                state="void" if epoch in voided else "final",
                posted_ms=int(block["timestamp"]) * 1000,
            ))  # fmt: skip
        return sorted(out, key=lambda a: a.index)

    def dispute_window_s(self) -> int:
        return int(self.contract.functions.disputeWindow().call())


def entry_args(e: Entry) -> tuple[str, str, bytes, bytes, int, int]:
    return (
        Web3.to_checksum_address(e.requester),
        Web3.to_checksum_address(e.worker),
        e.job,
        e.task,
        e.amount,
        e.previous,
    )


def entry_of(row: Any) -> Entry:
    """An ``Entry`` struct as web3 decodes it: a mapping by field name, or a tuple."""
    fields = ("requester", "worker", "job", "task", "amount", "previous")
    named = isinstance(row, Mapping)
    r, w, job, task, amount, previous = (row[k] for k in fields) if named else row
    return Entry(bytes.fromhex(r[2:]), bytes.fromhex(w[2:]), bytes(job), bytes(task), int(amount),
                 int(previous))  # fmt: skip


def payout_args(batch: PayoutBatch) -> list[Any]:
    workers = [Web3.to_checksum_address(w) for w in batch.workers]
    return [workers, list(batch.cumulatives), list(batch.proof), list(batch.flags)]
