"""Who may gossip which kind: the roles a peer's hello declared, through the real validator."""

from __future__ import annotations

import nacl.signing
import pytest

from config.schema import ROLES
from consensus.envelope import new_nonce, seal_body
from consensus.kinds import Body, Hello, Ping, Registry
from consensus.peer_id import peer_id_from_public_key
from consensus.pool import GpuOffer, Presence
from node import senders
from node.senders import SENDER_ROLES, DeclaredRoles
from p2p.validation import EnvelopeValidator, Verdict

NOW = 1_700_000_000_000
TOPICS = {"nodes": frozenset({Hello.KIND}), "presence": frozenset({Presence.KIND, Ping.KIND})}


def hello(*roles: str, expires_ms: int = NOW + 60_000) -> Hello:
    return Hello(expires_ms=expires_ms, nonce=new_nonce(), roles=list(roles), version="1",
                 listen=[])  # fmt: skip


def presence() -> Presence:
    offer = GpuOffer(gpu_class="cpu", count=1, vram_mb=0, price_wei_per_s=1)
    return Presence(expires_ms=NOW + 60_000, nonce=new_nonce(), run_id=b"r", seq=1,
                    status="available", offers=[offer], capacity=1)  # fmt: skip


class Peer:
    def __init__(self) -> None:
        self.key = nacl.signing.SigningKey.generate()
        self.id = peer_id_from_public_key(bytes(self.key.verify_key))


@pytest.fixture
def validator() -> EnvelopeValidator:
    registry = Registry([Hello, Ping, Presence])
    return EnvelopeValidator(registry, TOPICS, policy=DeclaredRoles(), clock=lambda: NOW)


def send(validator: EnvelopeValidator, peer: Peer, topic: str, body: Body) -> tuple[Verdict, str]:
    outcome = validator(topic, peer.id, seal_body(peer.key, body))
    return outcome.verdict, outcome.reason


def test_a_peer_that_declared_another_role_is_refused_with_the_reason(
    validator: EnvelopeValidator,
) -> None:
    peer = Peer()
    assert send(validator, peer, "nodes", hello("requester")) == (Verdict.ACCEPT, "")
    outcome = validator("presence", peer.id, seal_body(peer.key, presence()))
    verdict, reason = outcome.verdict, outcome.reason
    assert verdict is Verdict.REJECT
    assert outcome.blame_origin  # its own doing: not the relay's, which may not know its hello
    assert reason.startswith("sender not allowed: pool.presence/1 comes from a worker; ")
    assert reason.endswith(" declared requester")


def test_the_declared_role_or_no_hello_yet_lets_a_message_through(
    validator: EnvelopeValidator,
) -> None:
    early, worker = Peer(), Peer()
    assert send(validator, early, "presence", presence())[0] is Verdict.ACCEPT  # hello lost
    send(validator, worker, "nodes", hello("worker", "sentry"))
    assert send(validator, worker, "presence", presence())[0] is Verdict.ACCEPT
    ping = Ping(expires_ms=NOW + 60_000, nonce=new_nonce(), seq=1)
    assert Ping.KIND not in SENDER_ROLES
    assert send(validator, worker, "presence", ping)[0] is Verdict.ACCEPT  # anyone's kind


def test_the_latest_hello_counts(validator: EnvelopeValidator) -> None:
    peer = Peer()
    send(validator, peer, "nodes", hello("worker"))
    assert send(validator, peer, "presence", presence())[0] is Verdict.ACCEPT
    send(validator, peer, "nodes", hello())  # restarted with no roles
    assert send(validator, peer, "presence", presence())[0] is Verdict.REJECT


def test_hellos_are_remembered_up_to_a_bound_oldest_first(
    monkeypatch: pytest.MonkeyPatch, validator: EnvelopeValidator
) -> None:
    monkeypatch.setattr(senders, "MAX_PEERS", 2)
    first, second, third = Peer(), Peer(), Peer()
    for peer in (first, second, third):
        send(validator, peer, "nodes", hello("requester"))
    assert send(validator, first, "presence", presence())[0] is Verdict.ACCEPT  # forgotten
    assert send(validator, third, "presence", presence())[0] is Verdict.REJECT


def test_every_role_named_is_a_role_a_node_can_have() -> None:
    assert set(SENDER_ROLES.values()) <= set(ROLES)


def test_a_seen_message_is_a_forgery_from_another_peer_and_a_duplicate_from_its_author(
    validator: EnvelopeValidator,
) -> None:
    author, replayer = Peer(), Peer()
    raw = seal_body(author.key, presence())
    assert validator("presence", author.id, raw).verdict is Verdict.ACCEPT
    again = validator("presence", author.id, raw)  # the author re-announcing: no blame
    assert (again.verdict, again.reason) == (Verdict.IGNORE, "invalid nonce: replayed")
    stolen = validator("presence", replayer.id, raw)  # checked before the replay guard
    assert stolen.verdict is Verdict.REJECT
    assert stolen.reason == "envelope signer is not the gossip origin"


def test_an_older_hello_arriving_late_does_not_undo_a_newer_one(
    validator: EnvelopeValidator,
) -> None:
    peer = Peer()
    send(validator, peer, "nodes", hello("worker", expires_ms=NOW + 50_000))
    send(validator, peer, "nodes", hello(expires_ms=NOW + 40_000))  # sent before, came after
    assert send(validator, peer, "presence", presence())[0] is Verdict.ACCEPT


def test_roles_no_node_has_are_not_kept(validator: EnvelopeValidator) -> None:
    peer = Peer()
    send(validator, peer, "nodes", hello("root", "w" * 500))
    verdict, reason = send(validator, peer, "presence", presence())
    assert verdict is Verdict.REJECT and reason.endswith("declared no roles")


def test_a_replay_of_a_message_sent_before_a_role_change_is_only_a_duplicate(
    validator: EnvelopeValidator,
) -> None:
    peer = Peer()
    send(validator, peer, "nodes", hello("worker", expires_ms=NOW + 10_000))
    old = seal_body(peer.key, presence())
    assert validator("presence", peer.id, old).verdict is Verdict.ACCEPT
    send(validator, peer, "nodes", hello("requester", expires_ms=NOW + 50_000))  # restarted
    again = validator("presence", peer.id, old)  # someone re-injects its earlier presence
    assert (again.verdict, again.blame_origin) == (Verdict.IGNORE, False)
