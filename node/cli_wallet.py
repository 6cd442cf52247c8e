"""``idlegrid wallet balance|deposit|end|withdraw|stake|unstake|voucher|claim|job`` and
``idlegrid settlement txs``: the settlement contract from the command line.

Each command connects as ``[chain]`` says (the embedded chain is rebuilt from this node's
journal first), does one thing, and prints it; ``--json`` for scripts. Amounts are integer wei,
or exact decimals with a unit (``2.5gwei``, ``0.01eth``). Writes take ``--dry-run``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from config import load
from consensus.errors import Invalid
from consensus.settlement.disputes import FINAL_STATES
from consensus.settlement.eip712 import ChainVoucher
from consensus.settlement.units import format_wei, parse_units
from node import identity
from node.chain.artifacts import StaleArtifact
from node.chain.audit_calls import SUM_KINDS
from node.chain.errors import ChainError, ChainReverted
from node.chain.journal import Journal
from node.chain.signing import sign_voucher, voucher_signer
from node.cli_base import (
    BadInput,
    Failure,
    emit,
    home_option,
    job_arg,
    json_option,
    table,
    task_arg,
)
from node.client import ApiClient
from node.home import Home, resolve_home

if TYPE_CHECKING:
    from node.chain.client import Settlement, TxResult

dry_run_option = click.option(
    "--dry-run", is_flag=True, help="estimate and show what would be sent; send nothing"
)


def _passphrase() -> str | None:
    if os.environ.get("IDLEGRID_PASSPHRASE"):
        return os.environ["IDLEGRID_PASSPHRASE"]
    return str(click.prompt("key passphrase", hide_input=True)) if sys.stdin.isatty() else None


def connect(home_dir: str | None, dry_run: bool = False) -> Settlement:
    home = Home(resolve_home(home_dir))
    home.require_initialised()
    flags = {"chain.dry_run": (True if dry_run else None, "--dry-run")}
    settings = load(home.config, flags=flags).settings.chain
    keys = identity.load(home, _passphrase)
    # web3 and eth-tester take about a second to import: only the wallet commands pay for it.
    from node.chain.service import open_settlement  # noqa: PLC0415

    try:
        return open_settlement(settings, keys.wallet_key, home.db)
    except (ChainError, StaleArtifact) as exc:
        raise Failure(str(exc)) from None


def run(fn: Callable[[], Any]) -> Any:
    """Bad input exits 2, a refusal by the contract or an unreachable chain exits 1."""
    try:
        return fn()
    except Invalid as exc:
        raise BadInput(str(exc)) from None
    except ChainError as exc:
        raise Failure(str(exc)) from None


def amount_arg(c: Settlement, text: str, what: str) -> int:
    """An amount of ``c``'s payment asset (a token takes integer base units only)."""
    return int(run(lambda: parse_units(text, what, token=c.token is not None)))


def moved_arg(c: Settlement, text: str, what: str) -> int:
    """An amount to move (escrow, stake, pool): a 0 would pay gas to move nothing."""
    return _something(amount_arg(c, text, what), text, what)


def _something(value: int, text: str, what: str) -> int:
    if value == 0:
        raise BadInput(f"{what}: {text!r} moves nothing: give more than 0")
    return value


def show_tx(as_json: bool, r: TxResult, note: str = "") -> None:
    """The transaction (or what a dry run would send); ``note`` ends the text output."""
    payload: dict[str, Any] = {
        "op": r.op, "tx": r.tx_hash, "gas": r.gas, "block": r.block, "dry_run": r.dry_run,
    }  # fmt: skip
    if r.dry_run:
        payload["would_send"] = r.would_send
        emit(as_json, payload, lambda p: "dry run, nothing sent; would send:\n" + table(
            [(k, str(v)) for k, v in (p["would_send"] or {}).items()]) + note)  # fmt: skip
    else:
        emit(
            as_json,
            payload,
            lambda p: f"{p['op']}: mined in block {p['block']}, gas {p['gas']}, tx {p['tx']}{note}",
        )


def _test_money(backend: str) -> str:
    """Said once by ``balance``, ``stake`` and ``deposit``, the commands a newcomer runs
    first, so the faucet's 10000 ETH is not taken for real money."""
    return "embedded test chain: not real money" if backend == "embedded" else ""


@click.command("balance")
@home_option
@json_option
def balance(home_dir: str | None, as_json: bool) -> None:
    """Balance (of the payment token, when the contract has one), stake and pool of this
    node's chain account; amounts in wei, or the token's base units."""
    c = connect(home_dir)
    stake, pool = run(c.stake_of), run(c.pool_of)
    payload = {
        "address": c.address, "chain_id": c.chain.chain_id, "backend": c.chain.kind,
        "contract": c.contract_address, "token": c.token, "balance_wei": str(run(c.balance)),
        "gas_balance_wei": str(run(c.gas_balance)),
        "stake_bonded_wei": str(stake["bonded"]), "stake_unbonding_wei": str(stake["unbonding"]),
        "unbond_at": stake["unbond_at"], "pool_wei": str(pool["balance"]),
        "pool_leaving_wei": str(pool["leaving"]),
    }  # fmt: skip
    emit(as_json, payload, _balance_text)


def _balance_text(p: dict[str, Any]) -> str:
    unbonding = int(p["stake_unbonding_wei"])
    return table([
        ("address", p["address"]),
        ("chain", f"{p['chain_id']} ({_test_money(p['backend']) or p['backend']})"),
        ("contract", p["contract"]),
        ("balance", _amount(int(p["balance_wei"]), p["token"])),
        *([("token", p["token"]), ("gas coin", format_wei(int(p["gas_balance_wei"])))]
          if p["token"] else []),
        ("staked", _amount(int(p["stake_bonded_wei"]), p["token"])),
        ("unbonding", f"{_amount(unbonding, p['token'])} until {_utc(p['unbond_at'])}"
                      if unbonding else "-"),
        ("pool", f"{_amount(int(p['pool_wei']), p['token'])}, "
                 f"leaving {_amount(int(p['pool_leaving_wei']), p['token'])}"),
    ])  # fmt: skip


def _amount(units: int, token: str | None) -> str:
    """Coin in its units (eth, gwei); a token in its integer base units (its decimals vary)."""
    return format_wei(units) if token is None else f"{units} base units"


@click.command("deposit")
@click.argument("job")
@click.argument("amount")
@click.option("--cap", help="most ever escrowed for the job (default: AMOUNT); first deposit only")
@click.option("--deadline-s", type=click.IntRange(1), default=86400, show_default=True,
              help="seconds from now until the job's deadline; first deposit only")  # fmt: skip
@dry_run_option
@home_option
@json_option
def deposit(job: str, amount: str, cap: str | None, deadline_s: int, dry_run: bool,  # noqa: PLR0917
            home_dir: str | None, as_json: bool) -> None:  # fmt: skip
    """Escrow AMOUNT for JOB (creates it, or tops it up to its cap)."""
    job_id, c = job_arg(job), connect(home_dir, dry_run)
    value = moved_arg(c, amount, "AMOUNT")
    cap_wei = amount_arg(c, cap, "--cap") if cap else value
    result = run(lambda: c.deposit(job_id, value, cap_wei, c.chain.now() + deadline_s))
    show_tx(as_json, result, _note_line(c))


@click.command("end")
@click.argument("job")
@dry_run_option
@home_option
@json_option
def end(job: str, dry_run: bool, home_dir: str | None, as_json: bool) -> None:
    """JOB is over: workers may claim for the grace period from now, then `withdraw`."""
    job_id = job_arg(job)
    c = connect(home_dir, dry_run)
    show_tx(as_json, run(lambda: c.end_job(job_id)))


@click.command("withdraw")
@click.argument("job")
@dry_run_option
@home_option
@json_option
def withdraw(job: str, dry_run: bool, home_dir: str | None, as_json: bool) -> None:
    """Take back what JOB did not spend, once its claim window has closed."""
    job_id = job_arg(job)
    c = connect(home_dir, dry_run)
    show_tx(as_json, run(lambda: c.withdraw(job_id)))


@click.command("stake")
@click.argument("amount")
@dry_run_option
@home_option
@json_option
def stake(amount: str, dry_run: bool, home_dir: str | None, as_json: bool) -> None:
    """Bond AMOUNT as stake (workers and sentries)."""
    c = connect(home_dir, dry_run)
    value = moved_arg(c, amount, "AMOUNT")
    show_tx(as_json, run(lambda: c.stake(value)), _note_line(c))


def _note_line(c: Settlement) -> str:
    note = _test_money(c.chain.kind)
    return f"\n({note})" if note else ""


@click.command("unstake")
@click.argument("amount", required=False)
@click.option("--withdraw", "take", is_flag=True, help="take back stake whose unbonding is over")
@dry_run_option
@home_option
@json_option
def unstake(amount: str | None, take: bool, dry_run: bool, home_dir: str | None,
            as_json: bool) -> None:  # fmt: skip
    """Start unbonding AMOUNT (slashable until withdrawn), or --withdraw what has unbonded."""
    if bool(amount) == take:
        raise BadInput("give either AMOUNT (start unbonding) or --withdraw, not both or neither")
    c = connect(home_dir, dry_run)
    value = moved_arg(c, amount, "AMOUNT") if amount else 0
    show_tx(as_json, run(c.withdraw_stake if take else lambda: c.request_unstake(value)))


@click.command("fund")
@click.argument("amount", required=False)
@click.option("--leave", is_flag=True, help="ask AMOUNT back instead (after the unbonding delay)")
@click.option("--withdraw", "take", is_flag=True,
              help="take back all that has finished leaving (no AMOUNT)")  # fmt: skip
@dry_run_option
@home_option
@json_option
def fund(amount: str | None, leave: bool, take: bool, dry_run: bool,  # noqa: PLR0917
         home_dir: str | None, as_json: bool) -> None:  # fmt: skip
    """Add AMOUNT to this requester's pool for epoch settlement (or --leave / --withdraw it)."""
    if leave and take:
        raise BadInput("--leave and --withdraw exclude each other")
    if amount is None and not take:
        raise BadInput("give AMOUNT (to fund the pool, or with --leave to ask it back)")
    c = connect(home_dir, dry_run)
    # withdrawPool takes no amount: all that has left comes out. A 0 is taken for the scripts
    # written when AMOUNT was required; another amount would promise a part it cannot take.
    value = amount_arg(c, amount, "AMOUNT") if amount is not None else 0
    if take:
        if value:
            raise BadInput("--withdraw takes back all that has finished leaving: give no AMOUNT")
        show_tx(as_json, _withdraw_pool(c))
        return
    value = _something(value, str(amount), "AMOUNT")
    show_tx(as_json, run(lambda: c.leave_pool(value) if leave else c.fund(value)))


def _withdraw_pool(c: Settlement) -> TxResult:
    """``withdrawPool``, its refusals said as what to do (the contract names only an error)."""
    try:
        return c.withdraw_pool()
    except ChainReverted as exc:
        if exc.error == "WindowOpen":
            deadline = _utc(exc.args_["deadline"], seconds=True)
            raise Failure(f"the pool is still leaving: withdraw after {deadline}") from None
        if exc.error == "NotLeaving":
            raise Failure("nothing is leaving the pool: ask some back first with "
                          "`idlegrid wallet fund AMOUNT --leave`") from None  # fmt: skip
        raise Failure(str(exc)) from None
    except ChainError as exc:
        raise Failure(str(exc)) from None


@click.command("voucher")
@click.argument("job")
@click.argument("task")
@click.argument("worker")
@click.argument("cumulative")
@home_option
def voucher(job: str, task: str, worker: str, cumulative: str, home_dir: str | None) -> None:
    """Sign an EIP-712 voucher: CUMULATIVE in all for JOB's TASK (N or N#ATTEMPT) to WORKER.

    Prints the voucher as JSON, which `idlegrid wallet claim` takes.
    """
    job_id, task_id = job_arg(job), task_arg(task)
    if not (worker.startswith("0x") and len(worker) == 42):
        raise BadInput(f"WORKER: {worker!r} is not a 0x address")
    c = connect(home_dir)
    amount = amount_arg(c, cumulative, "CUMULATIVE")
    home = Home(resolve_home(home_dir))
    v = run(lambda: ChainVoucher(job_id, task_id, bytes.fromhex(worker[2:]), amount))
    sig = sign_voucher(identity.load(home, _passphrase).wallet_key, c.domain, v)
    click.echo(json.dumps({
        "job": "0x" + job_id.hex(), "task": "0x" + task_id.hex(), "worker": worker,
        "cumulative": str(amount), "signature": "0x" + sig.hex(), "chain_id": c.chain.chain_id,
        "contract": c.contract_address,
    }, indent=2))  # fmt: skip


@click.command("claim")
@click.argument("voucher_json", required=False)
@dry_run_option
@home_option
@json_option
def claim(voucher_json: str | None, dry_run: bool, home_dir: str | None, as_json: bool) -> None:
    """Claim what a voucher adds over earlier claims. VOUCHER_JSON: the JSON text, @FILE or -.

    Without VOUCHER_JSON: the running worker claims its anchored earnings now (Merkle proof
    from the latest final epoch), whatever chain.claim_threshold_wei says.
    """
    if voucher_json is None:
        done = ApiClient(Home(resolve_home(home_dir)), timeout_s=120).post("/v1/chain/claim")
        emit(as_json, done, _claim_text)
        return
    doc = _read_voucher(voucher_json)
    c = connect(home_dir, dry_run)
    v = run(lambda: ChainVoucher(doc["job"], doc["task"], doc["worker"], doc["cumulative"]))
    signer = run(lambda: voucher_signer(c.domain, v, doc["signature"]))
    requester = run(lambda: c.job(v.job))["requester"]
    if signer != requester:
        raise Failure(f"voucher: signed by {signer}, but job 0x{v.job.hex()} is {requester}'s")
    worker = "0x" + v.worker.hex()
    show_tx(as_json, run(lambda: c.claim(v.job, v.task, worker, v.cumulative, doc["signature"])))


def _claim_text(d: dict[str, Any]) -> str:
    """What ``/v1/chain/claim`` did. Nothing claimable once a final epoch names this worker
    means the chain has paid it all already (``claimable_wei`` is final earnings less paid)."""
    if d["claimed"]:
        return f"claimed {format_wei(int(d['paid_wei']))} (epoch {d['epoch']})"
    if "claimable_wei" in d and int(d["claimable_wei"]) <= 0:
        return ("nothing to claim: already paid out (by an anchoring sentry's payout or an "
                "earlier claim)")  # fmt: skip
    return f"nothing claimed: {d['reason']}"


def _read_voucher(arg: str) -> dict[str, Any]:
    text = sys.stdin.read() if arg == "-" else arg
    if arg.startswith("@"):
        try:
            text = Path(arg[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"VOUCHER_JSON: cannot read {arg[1:]}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
        return {
            "job": bytes.fromhex(raw["job"].removeprefix("0x")),
            "task": bytes.fromhex(raw["task"].removeprefix("0x")),
            "worker": bytes.fromhex(raw["worker"].removeprefix("0x")),
            "cumulative": int(raw["cumulative"]),
            "signature": bytes.fromhex(raw["signature"].removeprefix("0x")),
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            f"VOUCHER_JSON: not a voucher from `idlegrid wallet voucher` ({exc!r})"
        ) from None


@click.command("job")
@click.argument("job")
@home_option
@json_option
def job_escrow(job: str, home_dir: str | None, as_json: bool) -> None:
    """The escrow of JOB on chain: requester, cap, deposited, balance, deadlines.

    Only jobs escrowed with `idlegrid wallet deposit` have one; exits 2 for any other.
    """
    job_id = job_arg(job)
    c = connect(home_dir)
    j = run(lambda: c.job(job_id))
    payload = {
        k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in j.items()
    }
    if int(j["requester"], 16) == 0:  # the contract's empty record: never deposited
        _no_escrow(as_json, payload, job)
    emit(as_json, payload, lambda p: table([(k, str(v)) for k, v in p.items()]))


def _no_escrow(as_json: bool, payload: dict[str, Any], job: str) -> None:
    """Exits 2: the zeros of an empty record read as a job with nothing in it. ``--json`` keeps
    the record's fields and adds ``error``."""
    error = (f"no per-job escrow on chain for {job}: nothing was deposited under this id "
             "with `idlegrid wallet deposit` (a daemon's jobs are paid from the requester's "
             "pool instead: see idlegrid settlement status)")  # fmt: skip
    if as_json:
        emit(True, payload | {"error": error}, str)
        sys.exit(BadInput.exit_code)
    raise BadInput(error)


WALLET_COMMANDS = (
    balance, deposit, end, withdraw, stake, unstake, fund, voucher, claim, job_escrow,
)  # fmt: skip


@click.group("settlement")
def settlement() -> None:
    """Settlement on chain: this node's transactions."""


@settlement.command("status")
@home_option
@json_option
def settlement_status(home_dir: str | None, as_json: bool) -> None:
    """The running node's settlement: chain, account, pool, stake, escrow, anchoring, claims."""
    view = ApiClient(Home(resolve_home(home_dir))).get("/v1/chain")
    emit(as_json, view, _settlement_text)


def _settlement_text(v: dict[str, Any]) -> str:
    """The status as a reader wants it: amounts in their unit, times as dates, one line per
    part; ``--json`` keeps every field as the API gives it."""
    if not v.get("settle"):
        return "this node does not settle on chain (chain.settle = false)"
    token = v.get("token")

    def money(wei: Any) -> str:
        return _amount(int(wei or 0), token)

    pool, stake, payee = v.get("pool") or {}, v.get("stake") or {}, v.get("payee")
    rows = [
        ("chain", f"{v['chain_id']} ({v['backend']}), contract {v['contract']}"),
        ("account", v["address"]),
        ("balance", money(v["balance_wei"]) + _coin_note(v)),
        ("pool", f"{money(pool.get('balance'))}, debited {money(pool.get('debited'))}"
                 + _leaving(money, pool.get("leaving"), pool.get("leave_at"))),
        ("stake", f"{money(stake.get('bonded'))}"
                  + _leaving(money, stake.get("unbonding"), stake.get("unbond_at"))),
        ("earned", f"{money(v.get('earned_wei'))} over {v.get('epochs', 0)} epoch(s)"),
        ("pending", f"{v.get('pending_txs', 0)} transaction(s)"
                    + (" (dry run: nothing is sent)" if v.get("dry_run") else "")),
    ]  # fmt: skip
    if payee is not None:
        rows.append(("as worker", f"{payee.get('tasks', 0)} task(s), vouched "
                     f"{money(payee.get('vouched_wei'))}, last claim "
                     f"{_last_claim(payee, v.get('earned_wei'), money)}"))  # fmt: skip
        for owed in payee.get("arrears") or []:  # their work is declined until they pay
            unpaid = f"{money(owed['waiting_wei'])} unpaid over {owed['anchors']} anchors"
            rows.append(("in arrears", f"requester {owed['requester']} owes {unpaid}"))
    if "escrow" in v or "disputes" in v:  # the requester role's parts: absent on other nodes
        rows.append(("as requester", _requesting(v)))
    if anchorer := v.get("anchorer"):
        rows.append(("as anchorer", _anchoring(anchorer)))
    return table(rows)


def _last_claim(payee: dict[str, Any], earned_wei: Any, money: Callable[[Any], str]) -> str:
    """The claim this node made since it started; else whether the chain paid it anyway
    (``earned_wei``: all the contract paid this account, by sentries' payouts or claims)."""
    last = payee.get("last_claim") or {}
    if last.get("claimed"):
        return f"{money(last.get('paid_wei'))} at epoch {last.get('epoch')}"
    if int(earned_wei or 0) > 0:
        return (f"none by this node since it started; {money(earned_wei)} paid out on chain "
                "(by anchoring sentries' payouts or earlier claims)")  # fmt: skip
    return "none since the node started"


# settle_escrow states (node/chain/escrow.py) whose money is in the pool: funded, or asked back
# and not yet withdrawn. 'new' is not funded yet; 'returned' came back.
ESCROW_HELD = ("funded", "leaving")


def _requesting(v: dict[str, Any]) -> str:
    """Jobs counted by where their money is (the API groups them by escrow state), and
    disputes by whether they are still open."""
    jobs = (v.get("escrow") or {}).get("jobs") or {}
    count = {state: int(seen.get("count", 0)) for state, seen in jobs.items()}
    held = sum(count.get(s, 0) for s in ESCROW_HELD)
    said = {"leaving": "leaving", "returned": "returned", "new": "not funded yet"}
    parts = [f"{count[s]} {words}" for s, words in said.items() if count.get(s)]
    line = _plural(held, "job") + " in escrow" + (f" ({', '.join(parts)})" if parts else "")
    disputes = (v.get("disputes") or {}).get("disputes") or {}
    line += ", " + _plural(sum(disputes.values()), "dispute")
    still_open = sum(n for state, n in disputes.items() if state not in FINAL_STATES)
    return line + (f" ({still_open} open)" if still_open else "")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _anchoring(a: dict[str, Any]) -> str:
    line = f"{a.get('posted_here', 0)} epoch(s) posted here, {a.get('state')}"
    if a.get("stopped_at_epoch") is not None:
        line += (f"; HALTED: epoch {a['stopped_at_epoch']} on chain could not be rebuilt here "
                 "(asking the other anchorers for its entries)")  # fmt: skip
    return line


def _coin_note(v: dict[str, Any]) -> str:
    if v.get("token"):
        return f", gas coin {format_wei(int(v['gas_balance_wei']))}"
    return " (test coin)" if v["backend"] == "embedded" else ""


def _leaving(money: Callable[[Any], str], units: Any, at: Any) -> str:
    """``, X leaving on DATE`` while something is on its way out, else nothing (the contract
    keeps the last date after the withdrawal, with nothing leaving)."""
    if not int(units or 0) or not int(at or 0):
        return ""
    return f", {money(units)} leaving on {_utc(at)}"


def _utc(at: Any, seconds: bool = False) -> str:
    """A contract time (unix seconds) as people read it; ``seconds`` where one is waited for."""
    shown = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return datetime.fromtimestamp(int(at), UTC).strftime(shown)


@settlement.command("txs")
@home_option
@json_option
def txs(home_dir: str | None, as_json: bool) -> None:
    """Every chain transaction this node asked for, from its journal, oldest first."""
    home = Home(resolve_home(home_dir))
    home.require_initialised()
    journal = Journal(home.db)
    rows = [
        {"id": r.id, "op": r.op, "state": r.state, "tx": r.tx_hash, "gas": r.gas_used,
         "block": r.block, "value_wei": str(r.value_wei), "error": r.error,
         "chain_id": r.chain_id}
        for r in journal.rows()
    ]  # fmt: skip
    journal.close()
    header = ("ID", "OP", "STATE", "GAS", "BLOCK", "TX / ERROR")
    emit(as_json, rows, lambda rs: table([header] + [
        (str(r["id"]), r["op"], r["state"], str(r["gas"] or ""), str(r["block"] or ""),
         r["tx"] or r["error"]) for r in rs
    ]) if rs else "no chain transactions yet")  # fmt: skip


@settlement.command("epochs")
@home_option
@json_option
def epochs(home_dir: str | None, as_json: bool) -> None:
    """Anchored epochs, from the contract's events: roots, tx, total, dispute window state."""
    c = connect(home_dir)
    rows = run(lambda: epoch_rows(c))
    now = run(c.chain.now) if rows and not as_json else 0
    emit(as_json, rows, lambda rs: _epochs_text(rs, now))


def _epochs_text(rows: list[dict[str, Any]], now: int) -> str:
    """One line per epoch; ``now`` (contract time) says whether a dispute window has ended."""
    if not rows:
        return "no epochs anchored yet"
    header = ("EPOCH", "STATE", "TOTAL", "DISPUTES", "WINDOW ENDS", "EARNINGS ROOT", "TX")
    return table([header] + [
        (str(r["epoch"]), r["state"], format_wei(int(r["total_wei"])), str(r["disputes"]),
         _window(r["dispute_deadline"], now), r["earnings_root"][:18] + "...",
         r["tx"][:18] + "...")
        for r in rows
    ])  # fmt: skip


def _window(deadline: int | None, now: int) -> str:
    """Only the latest epoch has a window the contract reports; the others show ``-``."""
    if deadline is None:
        return "-"
    return _utc(deadline) + (" (ended)" if deadline <= now else "")


def epoch_rows(c: Settlement) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for log in c.events("Anchored"):
        a = log["args"]
        rows[a["epoch"]] = {
            "epoch": a["epoch"], "state": "pending", "anchorer": a["anchorer"],
            "earnings_root": "0x" + bytes(a["earningsRoot"]).hex(),
            "entries_root": "0x" + bytes(a["entriesRoot"]).hex(), "total_wei": str(a["total"]),
            "tx": "0x" + bytes(log["transactionHash"]).hex(), "block": log["blockNumber"],
            "disputes": 0, "sum_disputes": {}, "dispute_deadline": None,
        }  # fmt: skip
    for name, state in (("Finalized", "final"), ("Voided", "void")):
        for log in c.events(name):
            rows[log["args"]["epoch"]]["state"] = state
    for log in c.events("Disputed"):
        rows[log["args"]["epoch"]]["disputes"] += 1
    for log in c.events("SumDisputed"):  # audits: a leaf, a debit, the leaves, a previous
        row = rows[log["args"]["epoch"]]
        kind = SUM_KINDS.get(int(log["args"]["kind"]), "other")
        row["disputes"] += 1
        row["sum_disputes"][kind] = row["sum_disputes"].get(kind, 0) + 1
    latest = c.anchor()
    if latest["epoch"] in rows:  # a leaves answer moves it, and a sum answer the grace after
        rows[latest["epoch"]]["dispute_deadline"] = latest["open_until"]
    return [rows[k] for k in sorted(rows)]
