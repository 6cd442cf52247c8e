"""QoS probes inside real nodes (in this test's trio loop, real libp2p on 127.0.0.1): a worker
whose saved benchmark claims the reference worker's score on a CPU is probed by a sentry over
``/idlegrid/qos/1``, flagged, and the flag reaches the market API of the sentry and, over
gossip, the worker's own view."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from config import Settings
from config.schema import NodeSettings, P2pSettings, VerifySettings
from consensus.market.spec import REFERENCE_SCORE
from gpu.bench import BENCH_FILE
from node import identity
from node.api import Request
from node.daemon import NodeContext, routes, run_node
from node.home import Home

# Generous: no speed is asserted. Unloaded the flag takes ~12 s (the sentry looks at the pool
# every 5 s, the worker's first probe imports torch, three probes); CI under load took over 60.
TIMEOUT_S = 180


async def start(nursery: trio.Nursery, tmp_path: Path, name: str, roles: tuple[str, ...],
                bootstrap: tuple[str, ...] = ()) -> NodeContext:  # fmt: skip
    home = Home(tmp_path / name)
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    if "worker" in roles:  # as `idlegrid gpu bench` saves it, with the score edited up
        (home.root / BENCH_FILE).write_text(json.dumps({"seed": 1, "score": REFERENCE_SCORE}))
    keys = identity.load(home, lambda: None)
    conf = Settings(
        node=NodeSettings(roles=roles),
        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=bootstrap),
        verify=VerifySettings(qos_interval_s=1),
    )
    ctx: NodeContext = await nursery.start(
        lambda task_status: run_node(
            home, conf, keys, handle_signals=False, task_status=task_status
        )
    )
    return ctx


async def test_a_cpu_claiming_a_reference_gpu_is_flagged_in_the_market(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT_S):
            sentry = await start(nursery, tmp_path, "sentry", ("sentry", "requester"))
            assert sentry.network is not None and sentry.qos is not None
            worker = await start(nursery, tmp_path, "worker", ("worker",),
                                 (sentry.network.host.addrs[0],))  # fmt: skip
            assert worker.qos is not None
            peer = worker.keys.peer_id
            # Each side's own event: the worker's view can arrive after the sentry's last change.
            while sentry.qos.flag_of(peer) is None:
                await sentry.qos.changed.wait()
            while worker.qos.view(peer) is None:
                await worker.qos.changed.wait()
        market = await routes(sentry)[("GET", "/v1/market")](Request("GET", "/v1/market", "", b""))
        [row] = [w for w in market["workers"] if w["peer_id"] == peer]
        assert row["score"] == REFERENCE_SCORE
        qos = row["qos"]
        assert qos["flagged"] and f"claims score {REFERENCE_SCORE}" in qos["reason"]
        assert 0 < qos["measured"] < REFERENCE_SCORE // 2 and qos["answered"] >= 2
        seen = worker.qos.view(peer)  # the report crossed gossip to the worker itself
        assert seen is not None and seen["claimed"] == REFERENCE_SCORE
        nursery.cancel_scope.cancel()
