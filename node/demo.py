"""``make demo``: the whole flow on a local network, told step by step as it happens.

It starts a localnet (a requester, three workers and a sentry, each its own daemon, on one
shared chain), submits a real training job and a real render job (a batch job where Blender
is not installed) through the requester's API, prints every bid, award and task step as the
requester records them, fetches the results, and ends with a summary: what ran where, for how
long, at what price, with which verification guarantee, and each party's balance. Everything
it shows comes from the daemons' own APIs and the chain, as an operator's script would see it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.peer_id import short
from consensus.settlement.units import format_wei
from node.cli_base import short_peer
from node.client import ApiClient
from node.demo_watch import follow, follow_settlement
from node.home import Home

ROOT = Path(".demo").resolve()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
JOB_TIMEOUT_S = 300.0
POOL_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 180.0


@dataclass
class Ran:
    kind: str
    job_id: str
    view: dict[str, Any]
    results: Path


def idlegrid(*args: str, quiet: bool = False, check: bool = True) -> str:
    """Runs the CLI as a user would; exits the demo with its output when it fails."""
    cmd = [sys.executable, "-m", "node", *args]
    if not quiet:
        print("$ idlegrid " + " ".join(args), flush=True)
    done = subprocess.run(cmd, text=True, capture_output=True, check=False)
    if not quiet:
        print(done.stdout.rstrip(), flush=True)
    if check and done.returncode != 0:
        print((done.stdout + done.stderr).rstrip(), flush=True)
        raise SystemExit(f"demo: `idlegrid {' '.join(args)}` exited {done.returncode}")
    return done.stdout


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> None:
    heading("a local network: 1 requester, 3 workers, 1 sentry, one chain")
    if (ROOT / "localnet.json").exists():  # a previous run's daemons, if any are left
        idlegrid("localnet", "stop", "--dir", str(ROOT), quiet=True, check=False)
    idlegrid("localnet", "start", "--dir", str(ROOT))
    try:
        state = json.loads(idlegrid("localnet", "status", "--dir", str(ROOT), "--json", quiet=True))
        nodes = {n["name"]: n for n in state["nodes"]}
        names = {n["peer_id"]: n["name"] for n in state["nodes"]}
        requester = ApiClient(Home(Path(nodes["requester-1"]["home"])))
        wait_for_workers(requester, sum(1 for n in nodes.values() if n["role"] == "worker"))
        before = balances(nodes)
        ran = [run_job(requester, kind, spec, names) for kind, spec in jobs()]
        heading("settlement: the sentry anchors an epoch, the window passes, workers are paid")
        apis = {name: ApiClient(Home(Path(n["home"]))) for name, n in nodes.items()}
        chain = follow_settlement(apis, SETTLE_TIMEOUT_S)
        summary(ran, names, before, balances(nodes), chain, gas_used(nodes))
    finally:
        heading("stopping the local network")
        idlegrid("localnet", "stop", "--dir", str(ROOT))
    print(f"\ndemo done; data dirs and logs stay in {ROOT}", flush=True)


def jobs() -> list[tuple[str, Path]]:
    """The train example, and the render example where Blender (bpy) is installed."""
    second = ("render", EXAMPLES / "render-scene" / "job.toml")
    if importlib.util.find_spec("bpy") is None:
        print("(bpy is not installed: the batch example runs instead of the render)")
        second = ("exec", EXAMPLES / "exec-wordcount" / "job.toml")
    return [("train", EXAMPLES / "train-tiny" / "job.toml"), second]


def wait_for_workers(requester: ApiClient, count: int) -> None:
    heading(f"waiting until the requester's order book shows {count} workers")
    deadline = time.monotonic() + POOL_TIMEOUT_S
    while True:
        pool = requester.get("/v1/market")["workers"]
        available = [w for w in pool if w["status"] == "available"]
        if len(available) >= count:
            for w in available:
                print(f"  {w.get('name') or short_peer(w['peer_id'])}: {w['status']}", flush=True)
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: only {len(available)} of {count} workers joined in time")
        time.sleep(0.5)


def run_job(requester: ApiClient, kind: str, spec: Path, names: dict[str, str]) -> Ran:
    heading(f"a {kind} job: {spec.relative_to(EXAMPLES.parent)}")
    body = {"spec": spec.read_text(), "base_dir": str(spec.parent)}
    job_id = requester.post("/v1/jobs", body)["job_id"]
    print(f"  submitted job {job_id[:16]}", flush=True)
    view = follow(requester, job_id, lambda peer: names.get(peer, short(peer)), JOB_TIMEOUT_S)
    if view["state"] not in ("verified", "settled"):
        raise SystemExit(f"demo: the {kind} job ended {view['state']}: {view['reason']}")
    out = ROOT / "results" / kind
    idlegrid("job", "fetch", job_id, "--out", str(out), "--home", str(requester.home.root))
    return Ran(kind, job_id, view, out)


def balances(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each node's wallet balance on the shared chain, in wei."""
    out = {}
    for name, node in nodes.items():
        shown = idlegrid("wallet", "balance", "--json", "--home", node["home"], quiet=True)
        out[name] = int(json.loads(shown)["balance_wei"])
    return out


def gas_used(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Gas units of every mined transaction in each node's own journal."""
    out = {}
    for name, node in nodes.items():
        shown = idlegrid("settlement", "txs", "--json", "--home", node["home"], quiet=True)
        out[name] = sum(int(t["gas"] or 0) for t in json.loads(shown) if t["state"] == "mined")
    return out


def summary(  # noqa: PLR0917 - one argument per column of the table
    ran: list[Ran],
    names: dict[str, str],
    before: dict[str, int],
    after: dict[str, int],
    chain: dict[str, dict[str, Any]],
    gas: dict[str, int],
) -> None:
    heading("summary")
    for r in ran:
        cost = format_wei(int(r.view["cost_wei"]))
        print(f"  {r.kind} job {r.job_id[:12]}: {r.view['state']}, cost {cost}")
        print(f"    verification: {r.view.get('verification', {}).get('guarantee', '-')}")
        for a in r.view["attempts"]:
            seconds = max(0, ((a["ended_ms"] or a["started_ms"]) - a["started_ms"]) // 1000)
            paid_wei = int(a["payable_wei"] or a["vouched_wei"])
            rate = int(a["price_wei_per_s"]) * int(a.get("gpus") or 1)
            print(
                f"    task {a['task']} on {names.get(a['worker'], short_peer(a['worker']))}: "
                f"{seconds} s from award to end, {paid_wei // max(1, rate)} s metered at "
                f"{format_wei(int(a['price_wei_per_s']), 'gwei')}/s, {a['outcome'] or 'running'}, "
                f"paid {format_wei(paid_wei)}"
            )
        print(f"    results in {r.results}")
    print("  on chain (each balance change includes gas at the dev chain's price; on a real")
    print("  network the sentry pays workers out once earnings pass chain.payout_min_wei):")
    for name in sorted(after):
        delta = after[name] - before.get(name, after[name])
        sign = "+" if delta >= 0 else "-"
        print(
            f"    {name:12} balance {format_wei(after[name]):>24} ({sign}{format_wei(abs(delta))})"
            f"  {_role_money(chain.get(name, {}))}gas {gas.get(name, 0):,} units"
        )


def _role_money(view: dict[str, Any]) -> str:
    if escrow := view.get("escrow"):
        funded = sum(int(j["funded_wei"]) for j in escrow["jobs"].values())
        returned = sum(int(j["returned_wei"]) for j in escrow["jobs"].values())
        return f"escrowed {format_wei(funded)}, {format_wei(returned)} back; "
    if view.get("payee"):
        return f"received {format_wei(int(view.get('earned_wei', 0)))} of earnings; "
    if anchorer := view.get("anchorer"):
        return f"anchored {anchorer.get('posted_here', 0)} epoch(s); "
    return ""


if __name__ == "__main__":
    main()
