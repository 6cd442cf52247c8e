"""A job's datasets served by its workers too, not by the requester alone.

A requester names a dataset once in a job; without this, each worker of the job fetched it
from the requester, so a job spread over 50 workers sent it out 50 times over one uplink.
Now, when a task is ordered, the requester asks the workers already running (or done with)
the job's other tasks to serve its datasets to the new worker (:data:`SHARE_DATA`); each
that agrees is named in the order (``TaskOrder.data_holders``), and the new worker's fetch
probes them beside the requester and takes chunks from the fastest few at once
(:mod:`node.transfer.fetcher`). Every chunk is still checked against the manifest's hashes,
so a holder can slow a fetch down but not change a byte.

A worker grants such a request only to the requester of one of its own tasks that named the
dataset: the data is that requester's to share. Grants last as the node's other grants do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from consensus.errors import Invalid
from consensus.market.messages import MAX_DATA_HOLDERS
from consensus.market.spec import MAX_DATASETS
from consensus.peer_id import public_key_from_peer_id
from node.market.datasets import Datasets
from node.market.net import MarketNet
from node.market.store import TaskRow
from p2p.host import DialError
from p2p.reqresp import RequestError, RequestRejected

SHARE_DATA = "/idlegrid/market/share-data/1"
ASK_S = 3.0  # each holder's answer is awaited this long, all asked at once
HOLDING: frozenset[str] = frozenset({"running", "attested", "verified", "settled"})


async def ask_holders(
    net: MarketNet,
    tasks: Sequence[TaskRow],
    worker: str,
    ids: Sequence[bytes],
    addrs_of: Callable[[str], list[str]],
) -> list[str]:
    """The workers of ``tasks`` (a job's) that hold its datasets ``ids`` and agree to serve
    them to ``worker``: at most :data:`MAX_DATA_HOLDERS`, asked at once; one that does not
    answer within :data:`ASK_S` is left out."""
    if not ids:
        return []
    peers = [t.worker for t in tasks if t.state in HOLDING and t.worker and t.worker != worker]
    agreed: list[str] = []

    async def ask(peer: str) -> None:
        payload = {"d": list(ids), "p": worker}
        try:
            reply = await net.request(peer, addrs_of(peer), SHARE_DATA, payload, timeout_s=ASK_S)
        except (RequestError, DialError, trio.TooSlowError):
            return
        if isinstance(reply, dict) and reply.get("ok") is True:
            agreed.append(peer)

    async with trio.open_nursery() as nursery:
        for peer in list(dict.fromkeys(peers))[:MAX_DATA_HOLDERS]:
            nursery.start_soon(ask, peer)
    return sorted(agreed)


def share_request(payload: Any) -> tuple[list[bytes], str]:
    """The datasets and the peer of a :data:`SHARE_DATA` request.

    Raises:
        RequestRejected: malformed (named in the reason).
    """
    ids = payload.get("d") if isinstance(payload, dict) else None
    peer = payload.get("p") if isinstance(payload, dict) else None
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_DATASETS:
        raise RequestRejected("malformed", f"d: a list of 1 to {MAX_DATASETS} dataset ids")
    if not all(isinstance(d, bytes) and len(d) == 32 for d in ids):
        raise RequestRejected("malformed", "d: each a 32-byte dataset id")
    try:
        public_key_from_peer_id(peer if isinstance(peer, str) else "")
    except (Invalid, ValueError) as exc:
        raise RequestRejected("malformed", f"p: not a peer id ({exc})") from None
    assert isinstance(peer, str)
    return ids, peer


async def grant_shared(
    datasets: Datasets | None, named: Iterable[bytes], ids: list[bytes], peer: str
) -> dict[str, bool]:
    """Lets ``peer`` fetch ``ids`` from us, if the asking requester's tasks here ``named``
    them all.

    Raises:
        RequestRejected: one is not the requester's to share here, or we serve no datasets.
    """
    if datasets is None:
        raise RequestRejected("not_found", "this node serves no datasets")
    missing = set(ids) - set(named)
    if missing:
        raise RequestRejected("not_found", f"no task of yours here named {min(missing).hex()[:16]}")
    for dataset_id in ids:
        await datasets.grant(peer, dataset_id)
    return {"ok": True}
