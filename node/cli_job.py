"""``idlegrid job ...`` and ``idlegrid bids``: submit work and follow it to its result."""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from consensus.market.spec import JobSpec, SpecError, parse_spec
from consensus.market.spec_warnings import spec_warnings
from consensus.settlement.units import format_rate, format_wei
from node.cli_base import (
    BadInput,
    Failure,
    emit,
    failure,
    home_option,
    json_option,
    short_peer,
    table,
)
from node.client import ApiClient
from node.home import Home, HomeError, resolve_home
from node.market.packing import PackError, unpack

FINISHED = ("verified", "settled", "failed", "cancelled")
POLL_S = 0.5  # how often --wait and --follow ask the daemon
OUTCOME_CHARS = 160  # of an earlier attempt's outcome, on its own line


def _client(home_dir: str | None) -> ApiClient:
    return ApiClient(Home(resolve_home(home_dir)))


def _read_spec(path: str) -> tuple[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        return text, parse_spec(tomllib.loads(text))
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None
    except SpecError as exc:
        raise BadInput(f"{path}: {exc}") from None


@click.group()
def job() -> None:
    """Submit jobs and follow them: validate, submit, status, list, logs, fetch, cancel."""


@job.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def job_validate(file: str, as_json: bool) -> None:
    """Check a job spec without submitting it."""
    _, spec = _read_spec(file)
    missing = [p for p in spec.inputs if not (Path(file).parent / p).exists()]
    if missing:
        raise BadInput(f"{file}: io.inputs: {', '.join(missing)} not found next to the spec")
    warnings = _warn(spec_warnings(spec))
    payload = {"valid": True, "kind": spec.kind, "tasks": spec.tasks,
               "max_total_wei": str(spec.max_total_wei),
               "max_price_wei_per_s": str(spec.max_price_wei_per_s),
               "warnings": warnings}  # fmt: skip
    emit(as_json, payload, lambda p: f"ok: {_a(p['kind'])} job of {p['tasks']} task(s), "
                                     f"at most {_money(spec.max_total_wei, None)}")  # fmt: skip


@job.command("submit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="follow the job until it finishes")
@home_option
@json_option
def job_submit(file: str, wait: bool, home_dir: str | None, as_json: bool) -> None:
    """Submit a job spec; its inputs are read relative to the spec's folder."""
    text, spec = _read_spec(file)
    client = _client(home_dir)
    _warn(spec_warnings(spec) + _market_warnings(spec, client))
    base = str(Path(file).resolve().parent)
    try:
        job_id = client.post("/v1/jobs", {"spec": text, "base_dir": base})["job_id"]
    except HomeError as exc:
        raise failure(exc) from None
    if not wait:
        emit(as_json, {"job_id": job_id}, lambda p: p["job_id"])
        return
    click.echo(f"submitted {job_id}", err=as_json)
    final = _follow(client, job_id, quiet=as_json)
    emit(as_json, final, _human_job)
    if final["state"] in ("failed", "cancelled"):
        sys.exit(1)


def _warn(warnings: list[str]) -> list[str]:
    """Says each on stderr, where ``--json`` output stays parseable."""
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    return warnings


def _market_warnings(spec: JobSpec, client: ApiClient) -> list[str]:
    """A price cap below every worker this node knows of (of the class asked for): no bid would
    come (a worker above the cap does not even say why). Best effort: no market, no warning."""
    try:
        workers = client.get("/v1/market")["workers"]
    except HomeError:
        return []
    wanted = spec.requirements.gpu_class
    prices = [int(o["price_wei_per_s"]) for w in workers for o in w["offers"]
              if wanted in ("", o["gpu_class"])]  # fmt: skip
    if not prices or min(prices) <= spec.max_price_wei_per_s:
        return []
    return [
        f"budget.max_price_per_s {format_rate(spec.max_price_wei_per_s, None)} is below every "
        f"worker's price in the market ({len(prices)} offer(s), the lowest "
        f"{format_rate(min(prices), None)}): no worker will bid"
    ]


def _follow(client: ApiClient, job_id: str, quiet: bool) -> dict[str, Any]:
    """Prints each task's moves, why an attempt ended before the next, and the job's log lines
    until the job finishes."""
    seen: dict[int, str] = {}
    said: set[tuple[int, int]] = set()  # earlier attempts whose end was printed
    hinted = False
    cursor = 0
    while True:
        view = client.get(f"/v1/job?id={job_id}")
        logs = client.get(f"/v1/job/logs?id={job_id}&after={cursor}")
        cursor = logs["cursor"]
        if not quiet:
            for line in logs["lines"]:
                click.echo(f"  [task {line['task']}] {line['line']}")
            for a in _earlier_attempts(view):
                if a["outcome"] and (a["task"], a["attempt"]) not in said:
                    said.add((a["task"], a["attempt"]))
                    click.echo(_attempt_line(a, view.get("token")))
            for task in view["task_states"]:
                shown = f"{task['state']} {short_peer(task['worker'])} {task['reason']}".strip()
                if seen.get(task["task"]) != shown:
                    seen[task["task"]] = shown
                    click.echo(f"task {task['task']}: {shown}")
                    if not hinted and _unawarded(task):
                        hinted = True
                        click.echo(_retry_hint(view, job_id))
        if view["state"] in FINISHED:
            return dict(view)
        time.sleep(POLL_S)


def _unawarded(task: dict[str, Any]) -> bool:
    """A task waiting for a worker after an auction nobody won."""
    return not task["worker"] and bool(task["reason"])


def _retry_hint(view: dict[str, Any], job_id: str) -> str:
    left_s = max(0, (int(view["deadline_ms"]) - time.time_ns() // 1_000_000) // 1000)
    return (
        f"  (auctioned again every few seconds until the job's deadline, in {left_s // 60} min "
        f"{left_s % 60} s; Ctrl-C leaves it running, `idlegrid job cancel {job_id[:12]}` ends it)"
    )


def _job_id(_ctx: click.Context, _param: click.Parameter, text: str | None) -> str | None:
    """A job id as given; an empty one is named here, not by the API ("missing ?id=")."""
    if text is not None and not text.strip():
        raise BadInput("JOB_ID: empty: give a job id, or a unique prefix of one, as "
                       "`idlegrid job list` shows")  # fmt: skip
    return text


@job.command("status")
@click.argument("job_id", required=False, callback=_job_id)
@home_option
@json_option
def job_status(job_id: str | None, home_dir: str | None, as_json: bool) -> None:
    """One job's tasks, workers, attempts and cost (the latest job if no ID)."""
    client = _client(home_dir)
    if job_id is None:
        jobs = client.get("/v1/jobs")["jobs"]
        if not jobs:
            raise Failure("no jobs yet")
        job_id = jobs[0]["job_id"]
    emit(as_json, client.get(f"/v1/job?id={job_id}"), _human_job)


def _human_job(view: dict[str, Any]) -> str:
    head = f"job {view['job_id']}  {view['kind']}  {view['state']}"
    if view.get("reason"):
        head += f"  ({view['reason']})"
    datasets = (view.get("spec") or {}).get("datasets") or {}
    if datasets:
        head += "\ndatasets: " + ", ".join(f"{n} {d[:16]}" for n, d in sorted(datasets.items()))
    rows = [("TASK", "STATE", "ATTEMPT", "WORKER", "CHECKPOINTS", "NOTE")]
    for t in view["task_states"]:
        rows.append((str(t["task"]), t["state"], str(t["attempt"]), short_peer(t["worker"]),
                     str(t["checkpoints"]), t["reason"][:110]))  # fmt: skip
    earlier = "".join(f"\n  {_attempt_line(a, view.get('token'))}" for a in _earlier_attempts(view))
    if earlier:
        earlier = "\nearlier attempts:" + earlier
    checked = view.get("verification", {})
    verdicts = (
        "".join(
            f"\n  task {v['task']}#{v['attempt']} {'pass' if v['passed'] else 'FAIL'}"
            f" {short_peer(v['worker'])} {v['reason'][:60]}"
            for v in checked.get("verdicts", [])
        )
        + "".join(
            f"\n  task {e['task']}#{e['attempt']} ESCALATED {short_peer(e['worker'])}"
            f" cross-class miss on segments {e['segments']} by {short_peer(e['sentry'])}"
            + (f"; {e['outcome'][:90]}" if e["outcome"] else "")
            for e in checked.get("escalations", [])
        )
        + "".join(
            f"\n  task {r['task']}#{r['attempt']} resumed: {r['guarantee']}"
            for r in checked.get("resumed", [])
        )
        + "".join(
            f"\n  task {u['task']}#{u['attempt']} NOT CHECKED: {u['reason'][:90]}"
            for u in checked.get("unchecked", [])
        )
    )
    return (
        f"{head}\n{table(rows)}{earlier}\ncost so far: {_cost(view)}\n"
        f"verification: {_guarantee(view, checked)}{_not_held(checked)}{verdicts}"
    )


def _earlier_attempts(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Attempts before each task's current one that did not end ``done``: why the task moved
    to another worker (absent from a daemon too old to list attempts)."""
    attempts = view.get("attempts") or []
    current = {t["task"]: t["attempt"] for t in view["task_states"]} if attempts else {}
    return [a for a in attempts
            if a["attempt"] < current.get(a["task"], 0) and a["outcome"] != "done"]  # fmt: skip


def _attempt_line(a: dict[str, Any], token: str | None) -> str:
    """``task 0#0 on KooWc2zg: unreachable ...; paid 0 ETH of 0.0000006 ETH (600 gwei)
    vouched``: the amounts as the cost line shows them."""
    why = " ".join("".join(c if c.isprintable() else " " for c in a["outcome"] or "").split())
    if len(why) > OUTCOME_CHARS:  # a worker's error text can be long: one line each
        why = why[: OUTCOME_CHARS - 3] + "..."
    vouched = _money(int(a["vouched_wei"] or 0), token)
    paid = "" if a["payable_wei"] is None else f"paid {_money(int(a['payable_wei']), token)} of "
    return (
        f"task {a['task']}#{a['attempt']} on {short_peer(a['worker'])}: {why or 'ended'}; "
        f"{paid}{vouched} vouched"
    )


def _guarantee(view: dict[str, Any], checked: dict[str, Any]) -> str:
    """The stated guarantee holds for each task alone (sampling is per task): said so when
    there are several, or ``4 of 4 segments`` reads as the whole job's."""
    text = str(checked.get("guarantee", "-"))
    tasks = (view.get("spec") or {}).get("tasks") or len(view["task_states"])
    if int(tasks) > 1 and checked.get("level") != "none" and ": " in text:
        return text.replace(": ", ", per task: ", 1)
    return text


def _cost(view: dict[str, Any]) -> str:
    """ETH as the wallet and the demo show amounts, with gwei beside it as ``market`` and
    ``bids`` price a GPU-second; a token's base units unscaled (``--json`` keeps the wei)."""
    return _money(int(view["cost_wei"]), view.get("token"))


def _money(wei: int, token: str | None) -> str:
    """An amount as :func:`_cost` shows it."""
    if token:
        return f"{wei} base units"
    return f"{format_wei(wei)} ({format_wei(wei, 'gwei')})" if wei else "0 ETH"


def _not_held(checked: dict[str, Any]) -> str:
    """Says when the stated guarantee is not what happened: attempts paid unchecked."""
    n = len(checked.get("unchecked", []))
    return f" (not held for {n} task{'s' * (n != 1)}: no sentry's verdict)" if n else ""


@job.command("list")
@home_option
@json_option
def job_list(home_dir: str | None, as_json: bool) -> None:
    """The latest jobs, newest first."""
    payload = _client(home_dir).get("/v1/jobs")
    rows = [("JOB", "KIND", "TASKS", "STATE", "NAME")]
    rows += [(j["job_id"][:12], j["kind"], str(j["tasks"]), j["state"], j["name"])
             for j in payload["jobs"]]  # fmt: skip
    emit(as_json, payload, lambda _: table(rows))


@job.command("cancel")
@click.argument("job_id", callback=_job_id)
@home_option
@json_option
def job_cancel(job_id: str, home_dir: str | None, as_json: bool) -> None:
    """Cancel a job's unfinished tasks (their workers are paid for the seconds vouched)."""
    payload = _client(home_dir).post(f"/v1/job/cancel?id={job_id}")
    emit(as_json, payload, _cancelled)


def _cancelled(payload: dict[str, Any]) -> str:
    """A repeated cancel finds nothing left: "cancelled 0 task(s)" read as a failure."""
    n = payload["cancelled"]
    return f"cancelled {n} task(s)" if n else "nothing to cancel: every task has ended"


@job.command("logs")
@click.argument("job_id", callback=_job_id)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job finishes")
@home_option
@json_option
def job_logs(job_id: str, follow: bool, home_dir: str | None, as_json: bool) -> None:
    """The workload's output, streamed from the workers (--json: one object per line)."""
    client, cursor = _client(home_dir), 0
    while True:
        logs = client.get(f"/v1/job/logs?id={job_id}&after={cursor}")
        for line in logs["lines"]:
            click.echo(json.dumps(line) if as_json else f"[task {line['task']}] {line['line']}")
        cursor = logs["cursor"]
        if not follow or (not logs["lines"] and _finished(client, job_id)):
            return
        if not logs["lines"]:
            time.sleep(POLL_S)


def _finished(client: ApiClient, job_id: str) -> bool:
    return bool(client.get(f"/v1/job?id={job_id}")["state"] in FINISHED)


@job.command("fetch")
@click.argument("job_id", callback=_job_id)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@home_option
@json_option
def job_fetch(job_id: str, out_dir: str, home_dir: str | None, as_json: bool) -> None:
    """Unpack the finished tasks' outputs into DIR (task-N/ per task when there are several)."""
    client = _client(home_dir)
    results = client.get(f"/v1/job/results?id={job_id}")["results"]
    if not results:
        view = client.get(f"/v1/job?id={job_id}")
        if view["state"] in FINISHED:  # it never will: say why
            why = f" ({view['reason']})" if view.get("reason") else ""
            raise Failure(f"job {job_id} has no results and will have none: {view['state']}{why}")
        raise Failure(f"job {job_id} has no results yet")
    out, written = Path(out_dir), []
    for result in results:
        target = out if len(results) == 1 else out / f"task-{result['task']}"
        if not result["present"]:
            raise Failure(f"task {result['task']}: its result is not in the data dir yet")
        try:
            names = unpack(Path(result["path"]), target)
        except PackError as exc:
            raise Failure(f"task {result['task']}: {exc}") from None
        written += [str(target / n) for n in names]
    emit(as_json, {"files": written}, lambda p: "\n".join(p["files"]) or "(no files)")


@click.command()
@click.argument("job_id", callback=_job_id)
@home_option
@json_option
def bids(job_id: str, home_dir: str | None, as_json: bool) -> None:
    """Every bid a job received, with its price and what became of it."""
    payload = _client(home_dir).get(f"/v1/job/bids?id={job_id}")
    token = payload.get("token")
    rows = [("TASK", "ATTEMPT", "WORKER", "PRICE PER GPU", "GPUS", "EST S", "OUTCOME")]
    rows += [(str(b["task"]), str(b["attempt"]), short_peer(b["worker"]),
              format_rate(int(b["price_wei_per_s"]), token), str(b["gpus"]), str(b["est_s"]),
              b["outcome"]) for b in payload["bids"]]  # fmt: skip
    emit(as_json, payload, lambda _: table(rows))


@click.command()
@home_option
@json_option
def worker(home_dir: str | None, as_json: bool) -> None:
    """This worker's state and its latest decisions on demands (bid, or why not)."""
    payload = _client(home_dir).get("/v1/worker")
    rows = [("TASK", "DECISION")]
    rows += [(d["task"], d["decision"]) for d in payload["decisions"][-20:]]
    running = ", ".join(payload["running"]) or "nothing"
    paused = payload.get("paused") or []  # absent from a worker too old to pause
    if paused:
        running += f" (paused, no payment: {', '.join(paused)})"

    def human(p: dict[str, Any]) -> str:
        head = f"{p['status']}, {p['free_gpus']} GPU(s) free, running {running}"
        return f"{head}\n{_disk_text(p.get('disk'))}{table(rows)}"

    emit(as_json, payload, human)


def _disk_text(disk: dict[str, int] | None) -> str:
    """The worker's disk in one line (nothing from a worker too old to say)."""
    if disk is None:
        return ""
    return (
        f"disk: {max(0, disk['room_bytes']) >> 20} MB free for tasks' data "
        f"({disk['reserve_bytes'] >> 20} MB kept for the owner); "
        f"{disk['cached_datasets']} dataset(s) kept from earlier tasks, "
        f"{disk['cached_bytes'] >> 20} MB\n"
    )


def _a(word: str) -> str:
    """The word with its indefinite article ("an exec", "a train")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
