"""A dataset lent to a peer (a job's data shared with its other workers) is served until every
requester that lent it has taken it back, and taking it back never touches a grant."""

from __future__ import annotations

from typing import Any

from node.transfer.server import TransferServer

D = b"d" * 32
MANIFEST: Any = object()  # only handed back: the server never looks inside


def server() -> TransferServer:
    s = TransferServer(None, None)  # type: ignore[arg-type]  # no I/O in these checks
    s.offer(D, MANIFEST)
    return s


def test_a_lend_serves_until_each_lender_takes_it_back() -> None:
    s = server()
    assert s._manifest_for("w", D) is None, "neither granted nor lent"
    s.lend("w", D)
    s.lend("w", D)  # two requesters' jobs share the same data with the same worker
    s.unlend("w", D)
    assert s._manifest_for("w", D) is MANIFEST, "one lender still lends it"
    s.unlend("w", D)
    assert s._manifest_for("w", D) is None
    assert s._lent == {}, "nothing left behind"


def test_taking_back_a_lend_leaves_a_grant() -> None:
    s = server()
    s.grant("w", D)
    s.lend("w", D)
    s.unlend("w", D)
    s.unlend("w", D)  # once too often: no harm
    assert s._manifest_for("w", D) is MANIFEST
