"""Settlement gas benchmark on the embedded EVM (gas is the same on anvil or any EVM chain).

Measures every operation of the settlement contract, then the amortised gas per settled job on
the epoch path: 1000 jobs per epoch from 10 requesters to 10 workers, each worker earning 100
jobs per epoch and paid once per epoch (every 100 jobs), in an earnings tree of 1000 workers
(10-deep proofs); each anchor finalizes the previous epoch and carries each requester's signed
spend (its cumulative debits so far, checked on chain: an ecrecover and about 200 bytes of
calldata per requester). Workers are paid two ways, each on its own fresh chain: the anchoring
sentry pays all ten with one `payout` per epoch (the headline `gas_per_job`, what a daemon
does by default), or each worker sends its own `claimEarnings` (`gas_per_job_claims`). Next to
it, a plain coin transfer
per job measured in the same run, and the direct path (deposit, one voucher claim, end,
withdraw per job). The audits (EpochAudits.sol): a sum dispute of a worker's leaf and of a
requester's debit, each answered with AUDIT_LINES entries.

With --token the contract pays in the test ERC-20 (every deposit, fund and stake then also
needs an approve, counted apart as `approve`; every payout is a token transfer).

Usage: python bench/settlement.py [--epochs 3] [--workers-in-tree 1000] [--requesters 10] [--token]
"""

from __future__ import annotations

import argparse
import random

from eth_account import Account

from consensus.settlement.audits import EARNINGS, PREVIOUS, answer
from consensus.settlement.eip712 import ChainVoucher, chain_task_id
from consensus.settlement.epoch import Entry, Epoch, Spend, assemble
from consensus.settlement.leaves import payout_batches
from consensus.settlement.shown import ShownEntries, ShownLeaves
from node.chain import artifacts
from node.chain.backend import Chain, DeployParams
from node.chain.client import Settlement
from node.chain.signing import sign_slash, sign_spend, sign_voucher
from node.chain.token import deploy_test_token, mint

ETH = 10**18
JOBS_PER_EPOCH, WORKERS, FEE_BPS = 1000, 10, 100
TASK = chain_task_id(0, 0)
AUDIT_LINES = 10  # entries in each answer of a sum dispute


class Bench:
    def __init__(self, requesters: int, token: bool = False) -> None:
        self.chain = Chain.embedded()
        self.art = artifacts.load()
        self.token = deploy_test_token(self.chain) if token else None
        deployer = self.wallets(1)[0]
        params = DeployParams(
            treasury=self.chain.w3.eth.accounts[0], fee_bps=FEE_BPS, token=self.token
        )
        self.address = self.chain.deploy(self.art, params, deployer)
        latest = self.chain.w3.eth.get_block("latest")["transactions"][0]
        self.gas = {"deploy": int(self.chain.w3.eth.get_transaction_receipt(latest)["gasUsed"])}
        self.req, self.work, self.sentries = (self.wallets(n) for n in (requesters, WORKERS, 3))
        self.c = {k: self.client(k) for k in self.req + self.work + self.sentries}
        self.spent: dict[bytes, int] = {}  # per requester: every debit it authorised so far

    def spends(self, epoch: Epoch) -> dict[bytes, Spend]:
        """Each requester of ``epoch`` signs its spend up to and including this epoch."""
        keys = {addr(k): k for k in self.req}
        for r, amount in epoch.debits.items():
            self.spent[r] = self.spent.get(r, 0) + amount
        domain = self.c[self.req[0]].domain
        return {r: sign_spend(keys[r], domain, r, self.spent[r]) for r in epoch.debits}

    def wallets(self, n: int) -> list[bytes]:
        keys = [bytes(Account.create().key) for _ in range(n)]
        for k in keys:
            self.chain.fund(Account.from_key(k).address, 10_000 * ETH)
            if self.token is not None:
                mint(self.chain, self.token, Account.from_key(k).address, 10_000 * ETH)
        return keys

    def paid_in(self, c: Settlement, amount: int) -> None:
        """Approve ``amount`` ahead (timed as ``approve``), so the next call's gas is its own."""
        approval = c.approve(amount)
        if approval is not None:
            self.gas["approve"] = approval.gas

    def client(self, key: bytes) -> Settlement:
        return Settlement(self.chain, self.art, self.address, key)

    def transfer(self) -> None:
        a, b = self.work[0], self.work[1]
        tx = Account.sign_transaction({
            "to": Account.from_key(b).address, "value": 1, "gas": 21000,
            "chainId": self.chain.chain_id, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1,
            "nonce": self.chain.w3.eth.get_transaction_count(Account.from_key(a).address),
        }, a)  # fmt: skip
        h = self.chain.w3.eth.send_raw_transaction(tx.raw_transaction)
        self.gas["transfer"] = int(self.chain.w3.eth.wait_for_transaction_receipt(h)["gasUsed"])

    def direct(self) -> None:
        r, w, g = self.c[self.req[0]], self.c[self.work[0]], self.gas
        job = b"\x01" * 32
        self.paid_in(r, ETH)
        g["deposit"] = r.deposit(job, ETH, ETH, self.chain.now() + 600).gas
        for name, amount in (("claim_voucher_first", ETH // 4), ("claim_voucher_more", ETH // 2)):
            v = ChainVoucher(job, TASK, addr(self.work[0]), amount)
            sig = sign_voucher(self.req[0], r.domain, v)
            g[name] = w.claim(job, TASK, w.address, amount, sig).gas
        g["end_job"] = r.end_job(job).gas
        self.chain.advance(3601)
        g["withdraw"] = r.withdraw(job).gas
        g["direct_per_job"] = sum(
            g[k] for k in ("deposit", "claim_voucher_first", "end_job", "withdraw")
        )

    def stake_and_slash(self) -> None:
        w, g = self.c[self.work[0]], self.gas
        self.paid_in(w, 3 * ETH)
        g["stake"] = w.stake(3 * ETH).gas
        g["request_unstake"] = w.request_unstake(ETH).gas
        for k in self.sentries:
            self.c[k].stake(ETH)
        ev = b"\x09" * 32
        signers = sorted(self.sentries[:2], key=lambda k: int.from_bytes(addr(k), "big"))
        sigs = [sign_slash(k, w.domain, addr(self.work[0]), ETH, ev) for k in signers]
        g["slash"] = self.c[self.req[0]].slash(w.address, ETH, ev, sigs).gas

    def epochs(self, count: int, workers_in_tree: int, payout: bool) -> tuple[int, int, Epoch]:
        """Returns (gas of the last epoch, proof depth, last epoch)."""
        rng, g = random.Random(7), self.gas
        for k in self.req:
            self.paid_in(self.c[k], 1000 * ETH)
            g["fund"] = self.c[k].fund(1000 * ETH).gas
        anchorer = self.c[self.sentries[2]]
        lines: dict[tuple[bytes, bytes, bytes], int] = {}
        idle = range(1, workers_in_tree - WORKERS + 1)  # earned before, not claiming now
        earnings = {i.to_bytes(20, "big"): rng.randrange(1, ETH) for i in idle}
        prev: Epoch | None = None
        last = 0
        for e in range(count):
            entries = [
                Entry(addr(self.req[j % len(self.req)]), addr(self.work[j % WORKERS]),
                      (e * JOBS_PER_EPOCH + j).to_bytes(32, "big"), TASK,
                      rng.randrange(10**12, 10**15))
                for j in range(JOBS_PER_EPOCH)
            ]  # fmt: skip
            epoch = assemble(entries, lines, earnings, FEE_BPS)
            lines, earnings = epoch.lines, epoch.earnings
            self.chain.advance(3601)  # the previous epoch's window is over ...
            spends = self.spends(epoch)
            g["anchor"] = anchorer.post_anchor(epoch, spends).gas  # ... and this finalizes it
            paid = [] if prev is None else self.pay(anchorer, prev) if payout else self.claim(prev)
            last, prev = g["anchor"] + sum(paid), epoch
        self.chain.advance(3601)
        g["finalize"] = anchorer.finalize(count - 1).gas
        assert prev is not None
        return last, len(prev.earnings_proof(addr(self.work[0]))), prev

    def claim(self, epoch: Epoch) -> list[int]:
        gas = [
            self.c[k].claim_earnings(epoch.earnings[addr(k)], epoch.earnings_proof(addr(k))).gas
            for k in self.work
        ]
        self.gas["claim_earnings"] = max(gas)
        return gas

    def pay(self, anchorer: Settlement, epoch: Epoch) -> list[int]:
        workers = [addr(k) for k in self.work]
        [batch] = payout_batches(epoch.earnings_tree, epoch.earnings, workers)
        self.gas["payout"] = anchorer.payout(batch).gas
        assert all(anchorer.earned_by(workers)[w] == epoch.earnings[w] for w in workers)
        return [self.gas["payout"]]

    def disputes(self, index: int, after: Epoch) -> None:
        r, anchorer, g = self.c[self.req[0]], self.c[self.sentries[2]], self.gas
        requester = addr(self.req[0])
        entries = [Entry(requester, addr(self.work[i]), bytes([0xE0 + i]) * 32, TASK, ETH // 10)
                   for i in range(2)]  # fmt: skip
        epoch = assemble(entries, after.lines, after.earnings, FEE_BPS)
        spends = self.spends(epoch)
        g["anchor_one_requester"] = anchorer.post_anchor(epoch, spends).gas  # none to finalize
        ent = epoch.entries[0]
        g["dispute"] = r.dispute(index, ent, epoch.entry_proof(ent)).gas
        v = ChainVoucher(ent.job, ent.task, ent.worker, ent.amount)
        g["answer"] = anchorer.answer(index, ent, sign_voucher(self.req[0], r.domain, v)).gas
        r.dispute(index, epoch.entries[1], epoch.entry_proof(epoch.entries[1]))
        self.chain.advance(3601)
        g["void"] = r.void_anchor(index, epoch.entries[1], epoch.debits).gas

    def audits(self, index: int, after: Epoch, after_index: int) -> None:
        """Sum disputes of an anchor over ``after`` (the last final epoch, ``after_index``),
        each answered with AUDIT_LINES entries: what an honest anchorer pays to answer a worker
        or a requester. A bonded sentry disputes the worker's leaf, the requester its debit, and
        the ``previous`` of a line grown from ``after`` (another requester's and worker's)."""
        r, anchorer, g = self.c[self.req[0]], self.c[self.sentries[0]], self.gas  # [2]: slashed
        requester, worker = addr(self.req[0]), addr(self.work[0])
        entries = [Entry(requester, worker, bytes([0xD0 + i]) * 32, TASK, ETH // 100)
                   for i in range(AUDIT_LINES)]  # fmt: skip
        old = after.entries[1]  # requester 1, worker 1
        entries.append(Entry(old.requester, old.worker, old.job, old.task, old.amount + 1))
        epoch = assemble(entries, after.lines, after.earnings, FEE_BPS)
        anchorer.post_anchor(epoch, self.spends(epoch))
        cum = epoch.earnings[worker]
        g["dispute_earnings"] = (
            self.c[self.sentries[1]]
            .dispute_earnings(index, worker, cum, epoch.earnings_proof(worker))
            .gas
        )
        g["dispute_debit"] = r.dispute_debit(index).gas
        for d in anchorer.sum_disputes(index):
            a = answer(epoch, after.earnings, d.kind, d.party)
            name = "answer_earnings" if d.kind == EARNINGS else "answer_debit"
            g[name] = anchorer.answer_sum(d, (a.base, a.base_proof), a.entries, a.proof).gas
        grown = next(e for e in epoch.entries if e.previous)
        watcher = self.c[self.sentries[1]]
        g["dispute_previous"] = watcher.dispute_previous(index, grown, epoch.entry_proof(grown)).gas
        (d,) = (x for x in anchorer.sum_disputes(index) if x.kind == PREVIOUS)
        final = (after_index, old, after.entry_proof(old))
        g["answer_previous"] = anchorer.answer_previous(d, grown, final).gas
        # A demand for the leaves: the answer shows every one (the whole tree, idle workers
        # too), in parts of at most PART_LEAVES.
        g["dispute_leaves"] = self.c[self.sentries[1]].dispute_leaves(index).gas
        shown = ShownLeaves.of_rows(epoch.earnings.items())
        g["answer_leaves"] = sum(anchorer.answer_leaves(index, shown, j).gas
                                 for j in range(len(shown.nodes)))  # fmt: skip
        # A demand for the entries: every one of the epoch, in parts of at most PART_ENTRIES.
        g["dispute_entries"] = self.c[self.sentries[1]].dispute_entries(index).gas
        rows = ShownEntries.of_rows(epoch.entries)
        g["answer_entries"] = sum(anchorer.answer_entries(index, rows, j).gas
                                  for j in range(len(rows.nodes)))  # fmt: skip
        g["answer_entries_each"] = g["answer_entries"] // len(epoch.entries)


def addr(key: bytes) -> bytes:
    return bytes.fromhex(Account.from_key(key).address[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="at least 2: claims start after one")
    ap.add_argument("--workers-in-tree", type=int, default=1000)
    ap.add_argument("--requesters", type=int, default=10)
    ap.add_argument("--token", action="store_true", help="the contract pays in a test ERC-20")
    args = ap.parse_args()
    b = Bench(args.requesters, args.token)
    b.transfer()
    b.direct()
    b.stake_and_slash()
    last, depth, epoch = b.epochs(max(2, args.epochs), args.workers_in_tree, payout=False)
    b.disputes(max(2, args.epochs), epoch)
    b.audits(max(2, args.epochs) + 1, epoch, max(2, args.epochs) - 1)
    b2 = Bench(args.requesters, args.token)
    b2.stake_and_slash()  # the same state as the first chain's before its epochs
    paid_out, _, _ = b2.epochs(max(2, args.epochs), args.workers_in_tree, payout=True)
    b.gas["payout"] = b2.gas["payout"]
    report(b.gas, paid_out / JOBS_PER_EPOCH, last / JOBS_PER_EPOCH, depth, args)


def report(
    g: dict[str, int], per_job: float, per_job_claims: float, depth: int, args: argparse.Namespace
) -> None:
    width = max(len(k) for k in g)
    for k, v in g.items():
        print(f"{k:<{width}}  {v:>9,} gas")
    funding = args.requesters * g["fund"] / JOBS_PER_EPOCH
    print(f"epoch path: {JOBS_PER_EPOCH} jobs/epoch, {args.requesters} requesters, {WORKERS} "
          f"workers paid every {JOBS_PER_EPOCH // WORKERS} jobs, {args.workers_in_tree} "
          f"workers in the earnings tree ({depth}-deep proofs)")  # fmt: skip
    print(f"per settled job: {per_job:,.0f} gas with one payout of all {WORKERS} workers per "
          f"epoch (one anchor, finalizing the previous epoch, and the payout), "
          f"{per_job + funding:,.0f} with each requester funding each epoch; "
          f"{per_job_claims:,.0f} when each worker claims by itself")  # fmt: skip
    print(f"plain transfer per job (baseline): {g['transfer']:,} gas; epoch path = "
          f"{per_job / g['transfer']:.3f}x of it; direct path = {g['direct_per_job']:,} gas "
          f"= {g['direct_per_job'] / g['transfer']:.2f}x")  # fmt: skip
    keys = ("anchor", "payout", "claim_earnings", "dispute", "slash", "deploy", "deposit", "stake",
            "claim_voucher_first", "direct_per_job", "transfer", "dispute_earnings",
            "answer_earnings", "answer_leaves", "dispute_previous", "answer_previous",
            "dispute_entries", "answer_entries_each")  # fmt: skip
    names = {"claim_earnings": "claim", "claim_voucher_first": "claim_voucher"}
    fields = " ".join(f"gas_{names.get(k, k)}={g[k]}" for k in keys)
    print(f"RESULT gas_per_job={per_job:.0f} gas_per_job_claims={per_job_claims:.0f} {fields}")


if __name__ == "__main__":
    main()
