"""A hostile peer floods three real daemons with bad gossip: each refuses it and blames it.

The attacker runs in this process on py-libp2p's raw pubsub (no validation of its own); the
daemons are separate processes. Synchronised on the daemons' "rejected gossip" log lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub

from consensus.envelope import new_nonce, open_envelope, seal, seal_body
from consensus.kinds import Hello, Ping, Registry
from consensus.pool import GpuOffer, Presence
from p2p.gossip import DEFAULT_NETWORK, topic_name, wire_topic
from p2p.host import Host
from p2p.validation import wall_clock_ms
from tests.daemons import Daemon, cli_env, idlegrid
from tests.hostile import hostile_peer

ENV = cli_env(IDLEGRID_NODE_ROLES="worker")
# As the daemons' pubsub knows them: a hostile peer speaks raw pubsub.
PRESENCE, NODES = (wire_topic(topic_name(n), DEFAULT_NETWORK) for n in ("presence", "nodes"))


def presence(expires_in_ms: int = 60_000) -> Presence:
    offer = GpuOffer(gpu_class="cpu", count=1, vram_mb=0, price_wei_per_s=1)
    return Presence(
        expires_ms=wall_clock_ms() + expires_in_ms, nonce=new_nonce(), run_id=b"evil-run",
        seq=1, status="available", offers=[offer], capacity=1,
    )  # fmt: skip


def bad_messages() -> dict[str, tuple[str, bytes]]:
    stranger = nacl.signing.SigningKey.generate()
    ping = {"expires_ms": wall_clock_ms() + 60_000, "nonce": new_nonce(), "seq": 1}
    return {
        "malformed": (PRESENCE, b"\x95\x01garbage"),
        "forged signer": (PRESENCE, seal_body(stranger, presence())),
        "wrong kind for topic": (NODES, seal(stranger, Ping.KIND, ping)),
        "oversized": (PRESENCE, seal_body(stranger, presence()) + bytes(70 * 1024)),
        "too far in the future": (PRESENCE, seal_body(stranger, presence(10 * 3_600_000))),
    }


def own_faults(evil: nacl.signing.SigningKey) -> dict[str, tuple[str, bytes, str]]:
    """Messages the attacker signs itself (origin and signer agree), each bad in its own way:
    (topic, bytes, the reason the daemons give). Sent after a hello declaring it a requester,
    with a daemon's genuine message replayed (an honest author re-sends its own: ignored).
    """
    good = seal_body(evil, presence())
    flipped = good[:-1] + bytes([good[-1] ^ 1])  # the envelope ends with the signature
    return {
        "bad signature": (PRESENCE, flipped, "signature"),
        "sender not allowed": (PRESENCE, seal_body(evil, presence()), "comes from a worker"),
    }


def addr_of(home: Path) -> str:
    return str(json.loads(idlegrid(home, "status", "--json", env=ENV).stdout)["p2p"]["addrs"][0])


async def test_every_daemon_rejects_and_blames_a_hostile_peer(tmp_path: Path) -> None:
    daemons: list[Daemon] = []
    try:
        for i in range(3):
            home = tmp_path / f"n{i}"
            assert idlegrid(home, "init", env=ENV).returncode == 0
            args = ("--bootstrap", addr_of(daemons[-1].home)) if daemons else ()
            daemons.append(Daemon(home, args, ENV).wait_started())
        addrs = [addr_of(d.home) for d in daemons]
        await attack(addrs, daemons)
        await attack_as_a_requester(addrs, daemons)  # another attacker: the first is banned
    finally:
        for daemon in daemons:
            daemon.kill()


async def attack(addrs: list[str], daemons: list[Daemon]) -> None:
    cases = bad_messages()
    async with hostile_peer([PRESENCE, NODES]) as (evil, pubsub, _):
        await join(pubsub, evil, addrs)
        for topic, data in cases.values():
            await pubsub.publish(topic, data)
        await expect_blame(daemons, evil.peer_id, len(cases))


async def attack_as_a_requester(addrs: list[str], daemons: list[Daemon]) -> None:
    async with hostile_peer([PRESENCE, NODES]) as (evil, pubsub, key):
        await join(pubsub, evil, addrs)
        hello = Hello(expires_ms=wall_clock_ms() + 60_000, nonce=new_nonce(),
                      roles=["requester"], version="0", listen=[])  # fmt: skip
        await pubsub.publish(NODES, seal_body(key, hello))
        for daemon in daemons:  # the roles are taken before this line is logged
            line = await trio.to_thread.run_sync(daemon.wait_for, "peer discovered", 30)
            while f"peer={evil.peer_id}" not in line:
                line = await trio.to_thread.run_sync(daemon.wait_for, "peer discovered", 30)
        cases = own_faults(key)
        with trio.fail_after(30):
            cases["replayed"] = (NODES, await fresh_hello(pubsub, evil), "not the gossip origin")
        for topic, data, _ in cases.values():
            await pubsub.publish(topic, data)
        reasons = await expect_blame(daemons, evil.peer_id, len(cases))
        for daemon_reasons in reasons:
            for name, (_, _, why) in cases.items():
                assert any(why in r for r in daemon_reasons), (name, daemon_reasons)
        for peer in evil.connected_peers():  # not banned: hang up before the library stops,
            await evil.disconnect(peer)  # or gossip arriving as it stops breaks its shutdown


async def fresh_hello(pubsub: Pubsub, evil: Host) -> bytes:
    """A daemon's hello as gossip brought it to us, with 10 s or more left to live: the
    subscription holds every hello since we joined, the early ones near their expiry."""
    hellos = await pubsub.subscribe(NODES)  # the one hostile_peer made: libp2p keeps one
    while True:
        data = (await hellos.get()).data
        opened = open_envelope(data, wall_clock_ms(), Registry([Hello]))
        if (
            opened.signer_peer_id != evil.peer_id
            and opened.body.expires_ms > wall_clock_ms() + 10_000
        ):
            return data


async def join(pubsub: Pubsub, evil: Host, addrs: list[str]) -> None:
    for addr in addrs:
        peer = ID.from_base58(await evil.connect(addr))
        for topic in (PRESENCE, NODES):
            await pubsub.wait_for_subscription(peer, topic, 15)
            # publishing reaches mesh peers only; the mesh forms on a heartbeat
            await pubsub.wait_for_mesh(peer, topic, 15)


async def expect_blame(daemons: list[Daemon], evil_id: str, count: int) -> list[list[str]]:
    """Waits for ``count`` blames of ``evil_id`` on every daemon; returns each one's lines."""
    seen = []
    for daemon in daemons:
        lines = []
        for _ in range(count):
            line = await trio.to_thread.run_sync(daemon.wait_for, "rejected gossip", 30)
            assert f"peer={evil_id}" in line  # only the attacker is blamed, never a relay
            lines.append(line)
        seen.append(lines)
        peers = json.loads(idlegrid(daemon.home, "peers", "--json", env=ENV).stdout)["peers"]
        evil = next(p for p in peers if p["peer_id"] == evil_id)
        assert evil["score"] < 0
        assert evil["banned"] is (count >= 5)  # five faults reach the default ban threshold
        assert daemon.proc.poll() is None, "a daemon died"
        assert "Traceback" not in daemon.output()
    return seen
