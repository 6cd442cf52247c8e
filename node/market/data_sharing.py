"""A job's datasets served by its workers too, not by the requester alone.

A requester names a dataset once in a job; without this, each worker of the job fetched it
from the requester, so a job spread over 50 workers sent it out 50 times over one uplink.
Now, when a task is ordered, the requester shows the order to the workers running (or done
with) the job's other tasks (:data:`SHARE_DATA`) and asks them to serve its datasets to the
new worker; each that agrees is named in the order (``TaskOrder.data_holders``), and the new
worker's fetch probes them beside the requester and takes chunks from the fastest few at once
(:mod:`node.transfer.fetcher`). Every chunk is still checked against the manifest's hashes,
so a holder can slow a fetch down but not change a byte.

A worker agrees only to what is the requester's to share and only for a real order:
- the order is signed by the asking requester, names another worker, and is of a job one of
  whose tasks runs (or ran) here on the same datasets;
- the requester itself serves each dataset to us (a probe): a dataset id is public (demands
  carry it), and a requester that merely names another's private dataset holds none of it;
- the grant is lent, in memory only (gone at a restart), and a requester has at most
  :data:`MAX_LENT` distinct ones (worker and dataset) here, counted while a task of its is
  held here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from consensus.market.messages import TaskOrder
from node.market.datasets import Datasets
from node.market.net import MarketNet
from p2p.host import DialError
from p2p.reqresp import RequestError, RequestRejected

SHARE_DATA = "/idlegrid/market/share-data/1"
ASK_S = 3.0  # all holders are asked at once; those that agreed by then are named
HOLDING = ("running", "attested", "verified", "settled")  # a task whose data is in place
MAX_LENT = 1024  # distinct grants one requester may have lent on a worker at once


async def ask_holders(
    net: MarketNet, peers: Sequence[str], sealed_order: bytes, addrs_of: Callable[[str], list[str]]
) -> list[str]:
    """Those of ``peers`` (workers of the order's job, best first) that agree within
    :data:`ASK_S` in all to serve the order's datasets to its worker. Only peers we are
    connected to are asked: a dial would hold the order up."""
    agreed: list[str] = []

    async def ask(peer: str) -> None:
        payload = {"order": sealed_order}
        try:
            reply = await net.request(peer, addrs_of(peer), SHARE_DATA, payload, timeout_s=ASK_S)
        except (RequestError, DialError, trio.TooSlowError):
            return
        if isinstance(reply, dict) and reply.get("ok") is True:
            agreed.append(peer)

    with trio.move_on_after(ASK_S):
        async with trio.open_nursery() as nursery:
            for peer in peers:
                if net.connected(peer):
                    nursery.start_soon(ask, peer)
    return sorted(agreed)


@dataclass(frozen=True)
class Held:
    """A task this worker runs or ran: whose, of which job, on which datasets, how far."""

    requester: str
    job_id: bytes
    datasets: frozenset[bytes]
    state: str


async def lend_to(
    datasets: Datasets | None, held: Sequence[Held], requester: str, order: TaskOrder
) -> list[bytes]:
    """Lends ``order``'s worker the order's datasets if ``requester`` may share them here
    (see the module); returns them.

    Raises:
        RequestRejected: why not.
    """
    ids = frozenset(order.workload.datasets.values())
    if datasets is None or not ids:
        raise RequestRejected("not_found", "no datasets to share here")
    placed = ("running", "done")  # its data in place here (a worker's states)
    mine = [h for h in held if (h.requester, h.job_id) == (requester, order.ref.job_id)]
    if not any(ids <= h.datasets and h.state in placed for h in mine):
        raise RequestRejected("not_found", "no task of this job of yours here names them")
    for dataset_id in sorted(ids):
        if not await datasets.served_by(requester, dataset_id):
            raise RequestRejected("not_found", f"you do not serve {dataset_id.hex()[:16]} to us")
    for dataset_id in sorted(ids):
        await datasets.lend(order.worker, dataset_id)
    return sorted(ids)
