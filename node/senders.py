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
blaming) would punish honest peers. A hello counts once it passed every check (the replay
guard too), and only the newest: a late or replayed older hello does not undo it. A refusal
costs the message's origin score, not the peer that relayed it: nodes may have heard
different hellos (or, before this rule, none), so an honest relay cannot know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from config.schema import ROLES
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
    """A sender policy: the roles each peer's newest hello declared, and the rule above."""

    def __init__(self) -> None:
        self._roles: dict[str, tuple[int, frozenset[str]]] = {}  # peer -> (expiry, roles)

    def refuse(self, origin: str, opened: Opened) -> str | None:
        """None when ``origin`` may gossip ``opened``, else why not."""
        role, known = SENDER_ROLES.get(opened.kind), self._roles.get(origin)
        if role is None or known is None or role in known[1]:
            return None
        said = ", ".join(sorted(known[1])) or "no roles"
        return f"{opened.kind} comes from a {role}; {short(origin)} declared {said}"

    def accepted(self, origin: str, opened: Opened) -> None:
        """Takes the roles of a hello that passed every check, replay included, unless a
        newer one (later expiry) is kept already: a hello replayed late, or delivered out
        of order, does not undo the newer one."""
        body = opened.body
        if not isinstance(body, Hello):
            return
        kept = self._roles.pop(origin, None)  # re-inserted last: the newest is kept longest
        if kept is not None and kept[0] > body.expires_ms:
            self._roles[origin] = kept
            return
        self._roles[origin] = (body.expires_ms, frozenset(body.roles) & frozenset(ROLES))
        while len(self._roles) > MAX_PEERS:
            del self._roles[next(iter(self._roles))]
