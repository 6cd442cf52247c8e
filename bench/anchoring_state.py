"""What the anchoring sentry holds and saves as anchored lines pile up, against the same
machine keeping every line (as it did before lines were let go).

Run: ``.venv/bin/python bench/anchoring_state.py [--epochs 20] [--lines 2000]``

Each epoch, ``--lines`` new lines are vouched (a task each), posted, and final after the
window; the driver's part is played by :class:`node.chain.line_bases.LineBases` on a real
sqlite file, which writes the settled lines and lets them go. Both machines are saved as the
anchorer saves its own (``anchoring_state.dump`` packed with msgpack), after the last epoch:
its size and the time to pack it are what every save costs (the anchorer saves once per step
and per voucher taken). Then a resent voucher for the oldest line is looked up (the cost a
let-go line adds) and checked to add nothing. Ends with
``RESULT saved_kb=... baseline_saved_kb=... ratio=... save_ms=... baseline_save_ms=...
restore_ms=...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import msgpack
import trio

from consensus.settlement import anchoring_state
from consensus.settlement.anchoring import Anchoring, Post
from consensus.settlement.epoch import Entry, Spend
from node.chain.line_bases import LineBases
from storage.db import Database

WINDOW_MS = 3_600_000
# An epoch holds at most MAX_PARTY_LINES (1000) lines per requester and per worker: enough
# requesters and workers that every line vouched is anchored in its epoch.
REQUESTERS = [bytes([i + 1]) * 20 for i in range(20)]


def machine() -> Anchoring:
    m = Anchoring(epoch_ms=1000, fee_bps=100)
    for requester in REQUESTERS:
        m.on_spend(Spend(requester, 2**200, b"spend"))
    return m


def one_epoch(m: Anchoring, index: int, lines: list[Entry]) -> None:
    """Vouches ``lines``, posts them as epoch ``index`` and lets its window pass."""
    for e in lines:
        m.on_voucher(e, b"\x00" * 65)
    now = index * 2 * WINDOW_MS
    (post,) = m.on_tick(now)
    assert isinstance(post, Post)
    m.on_posted(index, window_end_ms=now + WINDOW_MS)
    m.on_tick(now + WINDOW_MS, may_post=False)


def save_cost(m: Anchoring) -> tuple[int, float]:
    """Bytes and ms of one save, the median of 3."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        blob = msgpack.packb(anchoring_state.dump(m))
        runs.append((time.perf_counter() - start) * 1000)
    return len(blob), sorted(runs)[1]


async def main(args: argparse.Namespace) -> None:
    workers = [os.urandom(20) for _ in range(100)]
    kept, baseline = machine(), machine()
    with tempfile.TemporaryDirectory() as tmp:
        async with await Database.open(Path(tmp) / "node.db") as db:
            bases = LineBases(db)
            first: Entry | None = None
            for index in range(args.epochs):
                lines = [
                    Entry(REQUESTERS[i % len(REQUESTERS)], workers[i % len(workers)],
                          os.urandom(32), bytes(32), 10**15)
                    for i in range(args.lines)
                ]  # fmt: skip
                first = first or lines[0]
                one_epoch(kept, index, lines)
                one_epoch(baseline, index, lines)
                await bases.settle(kept)
            saved, save_ms = save_cost(kept)
            base_saved, base_ms = save_cost(baseline)
            assert first is not None and not kept._fresh(), "lines left unanchored"
            start = time.perf_counter()
            await bases.restore(kept, [first])
            restore_ms = (time.perf_counter() - start) * 1000
            kept.on_voucher(first, b"\x00" * 65)  # the resend: nothing new on the line
            assert first.line not in {e.line for e in kept._fresh()}, "paid twice"
    total = args.epochs * args.lines
    print(f"{total} lines anchored over {args.epochs} epochs, saved state after the last:")
    print(f"  every line kept (before)  {base_saved / 1024:10.1f} KB  {base_ms:8.1f} ms per save")
    print(f"  open lines only (now)     {saved / 1024:10.1f} KB  {save_ms:8.1f} ms per save")
    print(f"  a let-go line looked up   {restore_ms:8.2f} ms (a resend adds nothing)")
    print(
        f"RESULT saved_kb={saved / 1024:.1f} baseline_saved_kb={base_saved / 1024:.1f} "
        f"ratio={saved / base_saved:.4f} save_ms={save_ms:.2f} baseline_save_ms={base_ms:.1f} "
        f"restore_ms={restore_ms:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lines", type=int, default=2000, help="new lines per epoch")
    trio.run(main, parser.parse_args())
