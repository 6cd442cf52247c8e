"""Who may gossip which kind: the roles a peer declared in its hello bind what it may send.

A demand comes from a requester, an attestation from a worker, a verdict from a sentry. A
peer that declared itself a requester and then gossips worker presence, or an attestation, is
refused (REJECT, costing it score) by :class:`p2p.validation.EnvelopeValidator`'s sender
policy. Roles are what a peer says of itself, so this keeps honest-but-confused peers and
casual abuse apart from the topics they do not belong on; who may *judge* is decided
further up, against stake and assignment (the verify layer counts only sentries assigned to
a task, the contract only staked ones).

A peer whose hello we have not heard since we started is let through: gossip is lossy and
a hello may arrive after the first messages of a peer that just started, so refusing (and
blaming) would punish honest peers. The hello is read inside the validator, in the order
messages arrive, so a peer's later messages are judged by the roles it declared first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from consensus.envelope import Opened
from consensus.kinds import Hello
from consensus.market.messages import Award, Demand
from consensus.peer_id import short
from consensus.pool import Presence
from consensus.settlement.messages import EpochEntries, EpochLeaves, SettledVoucher, VoucherCap
from consensus.verify.messages import Attestation, Escalation, SeedCommit, SeedReveal, Verdict
from consensus.verify.qos import QosReport

# The role that sends each gossiped kind; a kind not named here may come from anyone.
SENDER_ROLES: Final[Mapping[str, str]] = {
    Presence.KIND: "worker",
    Attestation.KIND: "worker",
    SettledVoucher.KIND: "worker",  # a worker's vouchers, handed to the anchorers
    Demand.KIND: "requester",
    Award.KIND: "requester",
    VoucherCap.KIND: "requester",
    SeedCommit.KIND: "sentry",
    SeedReveal.KIND: "sentry",
    Verdict.KIND: "sentry",
    Escalation.KIND: "sentry",
    QosReport.KIND: "sentry",
    EpochLeaves.KIND: "sentry",  # the anchoring service runs on sentries
    EpochEntries.KIND: "sentry",
}
MAX_PEERS: Final = 10_000  # hellos remembered; the oldest goes first


class DeclaredRoles:
    """A sender policy: the roles each peer's latest hello declared, and the rule above."""

    def __init__(self) -> None:
        self._roles: dict[str, frozenset[str]] = {}

    def __call__(self, origin: str, opened: Opened) -> str | None:
        """None when ``origin`` may gossip ``opened``, else why not."""
        if isinstance(opened.body, Hello):
            self._roles.pop(origin, None)  # re-inserted last: the newest is kept longest
            self._roles[origin] = frozenset(opened.body.roles)
            while len(self._roles) > MAX_PEERS:
                del self._roles[next(iter(self._roles))]
            return None
        role, declared = SENDER_ROLES.get(opened.kind), self._roles.get(origin)
        if role is None or declared is None or role in declared:
            return None
        said = ", ".join(sorted(declared)) or "no roles"
        return f"{opened.kind} comes from a {role}; {short(origin)} declared {said}"
