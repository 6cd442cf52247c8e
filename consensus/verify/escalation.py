"""A cross-class miss goes to a sentry of the worker's determinism class before anyone fails.

    who          on                               does
    -----------  -------------------------------  -------------------------------------------
    sentry A     its game ends ``escalated``      gossips an Escalation, no verdict of its own
    every node   an Escalation                    :func:`check_escalation`: accept, ignore
                                                  (no blame) or reject (costs the sender score)
    sentry B     accepted, :func:`answer_refusal`  replays the missed segments bitwise
                 says ""                          (:func:`second_game`) and gossips a Verdict
    requester    B's verdict                      counts it like any verdict
    requester    no verdict by the timeout, an    accepts the attempt unverified, saying
                 escalation heard                 :data:`NO_SAME_CLASS` (:func:`on_timeout`)
    settlement   a fail                           slashes only on :func:`slashable` grounds

Who answers: every sentry whose determinism class is the attestation's, once per attestation,
unless it was assigned the attestation itself (its own bitwise verdict comes anyway). Not one
sentry picked by a ranked rule: sentries do not announce their class, so the escalating sentry
(of another class by definition) cannot rank the right ones, and a rule over all sentries
would often pick one that cannot replay bitwise and leave the miss unanswered. Escalations are
rare (an honest run in the same class never misses) and the answer replays only the missed
segments, so a few same-class sentries answering the same one costs little; every answer is a
full, independently checkable verdict, and the requester needs ``quorum`` of them anyway.

A cross-class miss alone never fails a worker and never slashes: the escalating sentry
publishes no verdict, and :func:`slashable` refuses a replay fail from another class.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from consensus.peer_id import short
from consensus.verify import game as g
from consensus.verify.messages import MAX_DET_CLASS, Attestation, Escalation, Miss

Action = Literal["accept", "ignore", "reject"]
NO_SAME_CLASS = "cross-class miss, no same-class sentry"


@dataclass(frozen=True)
class Check:
    action: Action
    reason: str = ""


ACCEPT = Check("accept")


def escalation_of(
    att: Attestation,
    att_id: bytes,
    up: g.Escalate,
    *,
    det_class: str,
    seed: bytes,
    sampled: list[int],
    tolerance_ppm: int,
    expires_ms: int,
    nonce: bytes,
) -> Escalation:
    """The message a sentry in ``det_class`` gossips for its game's :class:`~g.Escalate`."""
    misses = [
        Miss(index=m.index, distance_ppm=m.distance_ppm, replayed=m.replayed, claimed=m.claimed)
        for m in up.misses
    ]
    return Escalation(
        expires_ms=expires_ms,
        nonce=nonce,
        ref=att.ref,
        worker=att.worker,
        attestation=att_id,
        det_class=det_class[:MAX_DET_CLASS],
        seed=seed,
        sampled=sampled,
        misses=misses,
        tolerance_ppm=tolerance_ppm,
        evidence=g.evidence_hash(up.evidence),
        reason=up.reason[:200],
    )


def check_escalation(esc: Escalation, att: Attestation | None, from_sentry: bool) -> Check:
    """How a node takes an escalation (its schema was checked when it was opened).

    Args:
        esc: the escalation.
        att: the attestation it names, if this node heard it.
        from_sentry: its signer is a sentry this node knows.

    Returns:
        Ignore (no blame: our view differs) for a signer not known as a sentry or an
        attestation not heard; Reject for one that contradicts its attestation; else Accept.
    """
    if not from_sentry:
        return Check("ignore", "not from a known sentry")
    if att is None:
        return Check("ignore", "attestation not heard")
    if esc.ref != att.ref or esc.worker != att.worker:
        return Check("reject", "names another task or worker than its attestation")
    if esc.det_class == att.det_class:
        return Check("reject", "same determinism class as the worker: replays compare bitwise")
    outside = [i for i in esc.sampled if not att.first <= i < att.segments]
    if outside:
        return Check("reject", f"segments {outside[:8]} outside {att.first}..{att.segments - 1}")
    return ACCEPT


def answer_refusal(
    att: Attestation,
    my_classes: Collection[str],
    *,
    assigned: bool,
    answered: bool,
    heard_ms: int,
    now_ms: int,
    timeout_ms: int,
) -> str:
    """Why this sentry does not answer an accepted escalation of ``att``, or ``""`` (answer).

    Args:
        my_classes: the determinism classes this sentry replays in.
        assigned: it was assigned ``att`` (and gives its own bitwise verdict).
        answered: it already answered an escalation of ``att``.
        heard_ms: when it heard ``att``; ``timeout_ms`` after it the requester has decided.
    """
    if att.det_class not in my_classes:
        return "another determinism class than the worker's"
    if assigned:
        return "assigned: judges it bitwise anyway"
    if answered:
        return "already answered"
    if now_ms >= heard_ms + timeout_ms:
        return "too late: the verdict timeout has passed"
    return ""


def second_game(
    att: Attestation, att_id: bytes, esc: Escalation, deadline_ms: int, tolerance_ppm: int
) -> g.Game:
    """The answering sentry's game: the missed segments only, compared bit for bit."""
    missed = sorted(m.index for m in esc.misses)
    return g.Game(att, att_id, missed, deadline_ms, True, tolerance_ppm)


def answer_reason(esc: Escalation, decision: g.Decide) -> str:
    """The answering verdict's reason: that it is a second opinion, and on what."""
    missed = sorted(m.index for m in esc.misses)
    said = decision.reason or "equal"  # a pass on an unsteady job says so
    return f"same-class replay of escalated segments {missed}: {said}"


def slashable(decision: g.Decide, same_class: bool) -> bool:
    """Whether a sentry's fail may back a slash: its grounds hold in every determinism class
    (an answer inconsistent with the signed attestation, silence, a bisection's one step from
    the worker's own state), or it is a bitwise replay in the worker's class. A cross-class
    replay of a whole segment never is, nor a probe left unanswered."""
    if decision.passed:
        return False
    return decision.grounds in ("answer", "silence", "step") or (
        decision.grounds == "replay" and same_class
    )


def on_timeout(
    escalated: list[tuple[str, str]], timeout_ms: int
) -> tuple[Literal["accepted", "unverified"], str]:
    """The requester's outcome when no verdict (or too few) came within ``timeout_ms``.

    Args:
        escalated: (sentry, reason) of each escalation heard on the attempt's attestation.

    Returns:
        ``("accepted", ...)`` naming :data:`NO_SAME_CLASS` when a sentry escalated (a
        cross-class miss alone fails nobody), else ``("unverified", ...)``.
    """
    if not escalated:
        return "unverified", f"no verdict within {timeout_ms} ms"
    sentry, reason = escalated[0]
    return "accepted", f"{NO_SAME_CLASS} within {timeout_ms} ms ({short(sentry)}: {reason})"
