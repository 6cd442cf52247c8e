"""``idlegrid wallet dispute``: a requester disputes its entries of the pending epoch by hand.

The entries come from gossip (the anchorer sends them while the epoch is pending), so the
running daemon does it (``POST /v1/chain/dispute``): it writes the dispute to
``settle_disputes``, sends it with the entry's Merkle proof, and voids the anchor if the
anchorer has not answered when the answer time is over, as for the disputes it finds itself.
"""

from __future__ import annotations

from typing import Any

import click

from consensus.settlement.units import format_wei
from node.cli_base import BadInput, emit, home_option, job_arg, json_option, table, task_arg
from node.client import ApiClient
from node.home import Home, resolve_home


@click.command("dispute")
@click.argument("epoch", type=click.IntRange(0))
@click.option("--job", required=True, help="the job's hex id (as `idlegrid job list` shows)")
@click.option("--worker", required=True, help="the worker's 0x chain address")
@click.option("--task", help="N or N#ATTEMPT (default: every entry of the job for that worker)")
@click.option("--dry-run", is_flag=True, help="show the entries and why; send nothing")
@home_option
@json_option
def dispute(epoch: int, job: str, worker: str, task: str | None, dry_run: bool,  # noqa: PLR0917
            home_dir: str | None, as_json: bool) -> None:  # fmt: skip
    """Dispute this requester's entries of pending epoch EPOCH for JOB and WORKER now.

    The running daemon sends the dispute with the entry's Merkle proof; the anchorer must show
    our voucher for exactly that amount within the answer window, or the daemon voids the
    anchor (every debit back to the pools, the anchorer's bond slashed, half of it to us).
    --dry-run shows the entries and why they would be disputed, and sends nothing.
    """
    if not (worker.startswith("0x") and len(worker) == 42):
        raise BadInput(f"--worker: {worker!r} is not a 0x address")
    try:
        bytes.fromhex(worker[2:])
    except ValueError:
        raise BadInput(f"--worker: {worker!r} is not a 0x address") from None
    body = {
        "epoch": epoch, "job": "0x" + job_arg(job, "--job").hex(), "worker": worker,
        "task": None if task is None else "0x" + task_arg(task, "--task").hex(), "dry_run": dry_run,
    }  # fmt: skip
    done = ApiClient(Home(resolve_home(home_dir)), timeout_s=120).post("/v1/chain/dispute", body)
    emit(as_json, done, _human)


def _human(done: dict[str, Any]) -> str:
    header = ("TASK", "AMOUNT", "REASON", "STATE", "ANSWER BY")
    rows = [
        (_task(d["task"]), format_wei(int(d["amount_wei"])), d["reason"], d["state"],
         str(d["answer_by"] or ""))
        for d in done["disputes"]
    ]  # fmt: skip
    can = "  (the anchorer holds our voucher for it: it can answer)"
    notes = [f"  {d['detail']}" + (can if d["answerable"] else "") for d in done["disputes"]]
    head = f"epoch {done['epoch']}" + (": dry run, nothing sent" if done["dry_run"] else "")
    return "\n".join([head, table([header, *rows]), *notes])


def _task(hex_id: str) -> str:
    n = int(hex_id, 16)  # the contract's task id: task << 32 | attempt
    return f"{n >> 32}#{n & 0xFFFFFFFF}"
