"""The settings a node reads, as frozen dataclasses: one class per TOML table.

Each field carries its documentation and its check in ``metadata`` so that the loader, the
``config show`` command, the README table and the commented ``idlegrid.toml`` written by
``idlegrid init`` all come from this one place. To add a setting, add a field here: nothing else
needs to change.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("requester", "worker", "sentry")
JOB_KINDS = ("train", "render", "exec")
LOG_LEVELS = ("debug", "info", "warning", "error")
SANDBOX_MODES = ("bwrap", "auto", "limits")

Check = Callable[[Any], str | None]
"""Returns None when the value is acceptable, else what was expected (shown to the user)."""


def setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declares a field with its default, its one-line documentation and an optional check."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, list | tuple):
        items = tuple(default)
        return field(default_factory=lambda: items, metadata=meta)
    return field(default=default, metadata=meta)


def int_range(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"an integer in {low}..{high}"

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def roles_check(value: Any) -> str | None:
    if not value:
        return f"at least one role of {', '.join(ROLES)}"
    unknown = [r for r in value if r not in ROLES]
    if unknown:
        return f"roles from {', '.join(ROLES)} (unknown: {', '.join(unknown)})"
    if len(set(value)) != len(value):
        return "each role at most once"
    return None


def kinds_check(value: Any) -> str | None:
    unknown = [k for k in value if k not in JOB_KINDS]
    return f"kinds from {', '.join(JOB_KINDS)}" if unknown or not value else None


def loopback_check(value: Any) -> str | None:
    # The local API can move money and read job data; it must never face a network.
    if value == "localhost":
        return None
    try:
        if ipaddress.ip_address(value).is_loopback:
            return None
    except ValueError:
        pass
    return "a loopback address such as 127.0.0.1 (the local API is never exposed)"


@dataclass(frozen=True)
class NodeSettings:
    roles: tuple[str, ...] = setting(
        ("requester",),
        "roles this node plays: requester, worker, sentry (combine freely)",
        roles_check,
    )
    log_level: str = setting("info", "console and log file level", one_of(LOG_LEVELS))
    name: str = setting("", "a human label shown to peers and in the explorer (optional)")
    task_data_expire_s: int = setting(
        7 * 86_400,
        "datasets and task files (inputs, checkpoints, results) held for tasks are deleted "
        "after this long unused (never before verdicts and bisections are due; the results "
        "of this node's own jobs stay); 0 keeps them (datasets until room runs short)",
        int_range(0, 365 * 86_400),
    )


@dataclass(frozen=True)
class ApiSettings:
    host: str = setting(
        "127.0.0.1", "address of the local HTTP API (loopback only)", loopback_check
    )
    port: int = setting(
        0,
        "port of the local HTTP API; 0 picks a free one and records it in api.json",
        int_range(0, 65535),
    )


IP_FAMILIES = ("ip4", "ip6")
QUIC_LISTEN = ("udp", "quic-v1")


def parse_multiaddr(text: str) -> list[str] | str:
    """The protocol names of multiaddr ``text``, or why it is not one (in the parser's words).

    Parsed here, not only where the host binds, so a typo (``/tcpp/``, a bad IP, port or peer
    id) stops at config load with the key named instead of deep in the daemon's start.
    """
    import multiaddr  # noqa: PLC0415 - only needed when an address is set

    try:
        return [proto.name for proto in multiaddr.Multiaddr(text).protocols()]
    except Exception as exc:  # the library raises several kinds, all meaning "not a multiaddr"
        return str(getattr(exc, "message", exc))


def _bad_addrs(value: Any, fits: Callable[[list[str]], bool], shape: str) -> list[str]:
    """Each address in ``value`` that does not parse or is not of ``shape``, with why."""
    bad = []
    for text in value:
        names = parse_multiaddr(text)
        if isinstance(names, str):
            bad.append(f"{text}: {names}")
        elif not fits(names):
            bad.append(f"{text}: not {shape}")
    return bad


def _on_ip(names: list[str]) -> bool:
    return bool(names) and names[0] in IP_FAMILIES


def is_quic_listen(names: list[str]) -> bool:
    """``/ip4|ip6/<ip>/udp/<port>/quic-v1``, the only QUIC form the host listens on."""
    return len(names) == 3 and _on_ip(names) and tuple(names[1:]) == QUIC_LISTEN


def _listenable(names: list[str]) -> bool:
    # The shapes the host binds (p2p.host); a QUIC one also needs p2p.quic (a cross-check).
    return (len(names) == 2 and _on_ip(names) and names[1] == "tcp") or is_quic_listen(names)


def multiaddrs_check(value: Any) -> str | None:
    shape = "/ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1"
    bad = _bad_addrs(value, _listenable, shape)
    return f"multiaddrs like /ip4/1.2.3.4/tcp/4001 (bad: {'; '.join(bad)})" if bad else None


def announce_check(value: Any) -> str | None:
    # Peers get these with /p2p/<our id> appended, so none may carry a peer id already.
    shape = "/ip4|ip6/<ip>/tcp/<port> without /p2p/"
    bad = _bad_addrs(value, lambda n: _on_ip(n) and "tcp" in n and "p2p" not in n, shape)
    if bad:
        return (
            f"TCP multiaddrs without /p2p/, like /ip4/203.0.113.7/tcp/4001 (bad: {'; '.join(bad)})"
        )
    return None


def peer_multiaddrs_check(value: Any) -> str | None:
    shape = "/ip4|ip6/<ip>/tcp/<port>/p2p/<peer id>"
    bad = _bad_addrs(value, lambda n: _on_ip(n) and n[-1] == "p2p", shape)
    return f"multiaddrs ending in /p2p/<peer id> (bad: {'; '.join(bad)})" if bad else None


def interface_check(value: Any) -> str | None:
    # Checked when the settings load, so a typo stops `node start` with the key named.
    if value == "":
        return None
    import psutil  # noqa: PLC0415 - only needed when an interface is set

    ifaces = psutil.net_if_addrs()
    ipv4 = {a.address for addrs in ifaces.values() for a in addrs if a.family.name == "AF_INET"}
    if value in ipv4 or any(a.family.name == "AF_INET" for a in ifaces.get(value, [])):
        return None
    return f"an IPv4 interface name or address of this machine (have: {', '.join(sorted(ifaces))})"


NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def network_check(value: Any) -> str | None:
    if isinstance(value, str) and NETWORK_NAME.fullmatch(value):
        return None
    return "1-32 lowercase letters, digits or dashes, starting with a letter or digit"


@dataclass(frozen=True)
class P2pSettings:
    network: str = setting(
        "main",
        "name of the network to join: a node hears gossip, DHT roles and mDNS neighbours of its "
        "own network only, so a test network can run beside another on one LAN or DHT",
        network_check,
    )
    listen: tuple[str, ...] = setting(
        ("/ip4/0.0.0.0/tcp/4001",),
        "addresses to listen on (TCP); port 0 picks a free one",
        multiaddrs_check,
    )
    announce: tuple[str, ...] = setting(
        (),
        "addresses to announce before the listen ones, e.g. a router's public address with a"
        " forwarded port (/ip4/203.0.113.7/tcp/4001); /p2p/<peer id> is added",
        announce_check,
    )
    bootstrap: tuple[str, ...] = setting(
        (),
        "peers to join the network through (multiaddrs with /p2p/<peer id>)",
        peer_multiaddrs_check,
    )
    announce_interval_s: int = setting(
        10,
        "seconds between announcements of this node (and of a worker's presence); each lives"
        " three intervals and peers refuse one that claims to live over an hour",
        int_range(1, 1200),
    )
    offline_after_s: int = setting(
        30, "silence after which a peer or worker counts as offline", int_range(2, 86400)
    )
    rtt_interval_s: int = setting(
        30,
        "seconds between pings of every connected peer, for the round-trip times that"
        " `idlegrid peers` and `idlegrid market` show and the auction weighs",
        int_range(1, 3600),
    )
    max_connections: int = setting(128, "most open connections", int_range(1, 10000))
    quic: bool = setting(
        False, "also listen and dial over QUIC (UDP); slow in py-libp2p: 1-3 MB/s, not for bulk"
    )
    dht: str = setting(
        "server",
        "Kademlia DHT: server (answers queries), client (only asks; behind NAT) or off",
        one_of(("server", "client", "off")),
    )
    relay_hop: bool = setting(
        False, "serve as a circuit relay v2 for nodes behind NAT (needs a reachable address)"
    )
    relay_reserve: bool = setting(
        False, "behind NAT: reserve a slot on relays among connected peers and announce it"
    )
    mdns: bool = setting(False, "find peers on the LAN by mDNS (needs p2p.mdns_interface)")
    mdns_interface: str = setting(
        "", "interface (name or IPv4 address) mDNS announces and listens on", interface_check
    )


@dataclass(frozen=True)
class WorkerSettings:
    price_wei_per_s: int = setting(
        10**12,
        "price per second per GPU, in wei; workers set their own prices",
        int_range(0, 2**63 - 1),
    )
    region: str = setting("", "region label shown in the order book, e.g. eu-west (optional)")
    kinds: tuple[str, ...] = setting(
        JOB_KINDS, "job kinds this worker takes: train, render, exec", kinds_check
    )
    allow_network: bool = setting(False, "take jobs that ask for network access")
    share_task_data: bool = setting(
        True, "serve a job's datasets to the job's other workers when its requester asks"
    )
    idle_only: bool = setting(False, "take work only while the machine's owner is not using it")
    sandbox: str = setting(
        "bwrap",
        "how workloads are jailed: bwrap (required), auto (bwrap if it works, else limits), "
        "limits (resource limits only: workloads can read what their uid can)",
        one_of(SANDBOX_MODES),
    )
    sandbox_memory_mb: int = setting(
        8192, "address space a workload may use, in MB", int_range(256, 2**24)
    )
    sandbox_cpu_s: int = setting(
        86_400, "CPU seconds a workload process may use", int_range(10, 30 * 86_400)
    )
    sandbox_file_mb: int = setting(
        10_240, "largest file a workload may write, in MB", int_range(1, 2**24)
    )
    sandbox_procs: int = setting(
        256, "processes and threads a workload may run at once", int_range(8, 65_536)
    )
    disk_reserve_mb: int = setting(
        2048,
        "disk kept free for the machine's owner, in MB: the worker bids only on tasks whose "
        "inputs and datasets fit beside it",
        int_range(0, 2**30),
    )
    dataset_keep_s: int = setting(
        86_400,
        "a dataset fetched for a task stays at least this long after a task last used it (the "
        "sentries checking that task fetch it here; never less than verify.verdict_timeout_ms "
        "plus verify.bisect_timeout_ms)"
        ", then goes when another task's data needs the room",
        int_range(0, 30 * 86_400),
    )
    executor_wrapper: str = setting(
        "",
        "a module whose wrap(executor) wraps the runtimes: for tests and experiments (e.g. a "
        "deliberately cheating worker); empty in production",
    )


@dataclass(frozen=True)
class MarketSettings:
    bid_window_ms: int = setting(
        2000, "longest a job's demand collects bids, in ms", int_range(100, 600_000)
    )
    voucher_interval_ms: int = setting(
        2000, "how often a requester pays (and hears progress), in ms", int_range(100, 60_000)
    )
    voucher_grace_ms: int = setting(
        10_000,
        "a worker pauses a task this long after the last payment, in ms (a requester's order)",
        int_range(500, 600_000),
    )
    voucher_hold_ms: int = setting(
        120_000,
        "a worker keeps a task paused for lack of payment this long for its requester to come "
        "back (a restart), then stops it, in ms; 0 stops it at once",
        int_range(0, 3_600_000),
    )
    lost_after_ms: int = setting(
        8000,
        "a worker silent this long has its task moved elsewhere, in ms",
        int_range(500, 600_000),
    )


@dataclass(frozen=True)
class VerifySettings:
    """Proof-of-compute; defaults from bench/cheaters.py (see the README's Proof-of-compute)."""

    sample_size: int = setting(
        16,
        "segments each sentry re-executes besides the final one (16: P(detect 25 % faked) >= 99 %)",
        int_range(0, 4096),
    )
    sentries_per_task: int = setting(
        1, "sentries assigned to each task (rendezvous hashing on the task)", int_range(1, 16)
    )
    quorum: int = setting(
        1,
        "failing verdicts needed for slashing evidence (one fail already stops payment)",
        int_range(1, 16),
    )
    commit_window_ms: int = setting(
        1500,
        "how long assigned sentries have to commit to their seed share, in ms",
        int_range(0, 600_000),
    )
    reveal_window_ms: int = setting(
        1500, "how long after that to reveal it, in ms", int_range(0, 600_000)
    )
    challenge_deadline_ms: int = setting(
        10_000, "a worker silent this long on a challenge fails it, in ms", int_range(100, 600_000)
    )
    tolerance_ppm: int = setting(
        1000,
        "cross-class replay distance (ppm) at or under which a segment passes; over it "
        "escalates (1000000 is an unmeasurable distance, so at most 999999)",
        int_range(0, 999_999),
    )
    step_tolerance_ppm: int = setting(
        10,
        "a bisection's one step from the worker's own state passes at or under this distance "
        "(ppm), or a tenth of how far the step moved the state; over both it failed that step",
        int_range(0, 999_999),
    )
    bisect_timeout_ms: int = setting(
        1_800_000,
        "how much longer than the verdict timeout a requester (and settlement) waits when a "
        "sentry's cross-class miss will be bisected with the worker, in ms",
        int_range(0, 86_400_000),
    )
    verdict_timeout_ms: int = setting(
        120_000,
        "longest a requester waits for a verdict; after it the task is accepted unverified, in ms",
        int_range(1000, 86_400_000),
    )
    slash_wei: int = setting(
        10**17,
        "sentries: the stake a failing verdict asks the contract to slash, in wei (every sentry "
        "of a network must use the same amount, or their signatures never make a quorum)",
        int_range(1, 2**255),
    )
    qos_interval_s: int = setting(
        300,
        "sentries: mean seconds between two QoS probes of one worker (random times); 0 = off",
        int_range(0, 600),
    )
    det_class: str = setting(
        "",
        "tests and bench only: the determinism class this node attests (worker) and replays in "
        "(sentry) instead of the measured one; empty in production",
    )


CHAIN_BACKENDS = ("embedded", "rpc")


def rpc_url_check(value: Any) -> str | None:
    ok = value == "" or value.startswith(("http://", "https://"))
    return None if ok else "an http:// or https:// JSON-RPC URL, or empty for the embedded chain"


def address_check(value: Any) -> str | None:
    hexpart = value[2:] if value.startswith("0x") else ""
    ok = value == "" or (len(hexpart) == 40 and all(c in "0123456789abcdefABCDEF" for c in hexpart))
    return None if ok else "a 0x-prefixed 20-byte hex address, or empty"


TEST_TOKEN = "test"  # noqa: S105 - chain.token's value for the embedded chain's test token


def token_check(value: Any) -> str | None:
    if value == TEST_TOKEN or address_check(value) is None:
        return None
    return 'a 0x-prefixed 20-byte ERC-20 address, "test" (embedded chain), or empty (native coin)'


@dataclass(frozen=True)
class ChainSettings:
    backend: str = setting(
        "embedded",
        "embedded (an in-process EVM, deployed on start, rebuilt from the journal) or rpc",
        one_of(CHAIN_BACKENDS),
    )
    rpc_url: str = setting("", "JSON-RPC endpoint when backend = rpc", rpc_url_check)
    chain_id: int = setting(
        0, "chain id the endpoint must report (backend = rpc)", int_range(0, 2**63 - 1)
    )
    contract: str = setting("", "settlement contract address (backend = rpc)", address_check)
    from_block: int = setting(
        0,
        "the block chain.contract was deployed in (backend = rpc): its events are read from "
        "there; 0 reads from the chain's first block, which providers may refuse or answer "
        "slowly on a long chain such as Arbitrum One",
        int_range(0, 2**63 - 1),
    )
    log_span: int = setting(
        10_000,
        "the most blocks one eth_getLogs asks for (events are scanned once from chain.from_block "
        "and kept); halved while the endpoint refuses a span, so lower it for a provider that "
        "caps ranges to skip the refusals",
        int_range(1, 10**9),
    )
    token: str = setting(
        "",
        "payment asset: empty = native coin; an ERC-20 address (backend = rpc), which must be "
        'the token chain.contract was deployed with; "test" (embedded): a test token, minted '
        "to this wallet",
        token_check,
    )
    dry_run: bool = setting(False, "print what would be sent instead of sending it")
    settle: bool = setting(
        False,
        "the daemon settles market jobs on this chain: requesters fund escrow and sign "
        "vouchers, workers check and submit them, sentries anchor epochs",
    )
    anchor: bool = setting(
        True,
        "sentries: post epoch anchors (chain.settle); one anchoring sentry per network for now, "
        "the others still verify and slash",
    )
    epoch_s: int = setting(
        3600, "sentries: seconds between epoch anchors (chain.settle)", int_range(1, 30 * 86400)
    )
    poll_s: int = setting(
        5, "seconds between looks at the chain (anchors, claims, escrow)", int_range(1, 3600)
    )
    min_worker_stake_wei: int = setting(
        10**17,
        "requesters: refuse a bid unless the worker's bonded stake on chain is at least this, "
        "in wei (the default is verify.slash_wei's: one slash); 0 asks for none",
        int_range(0, 2**255),
    )
    take_unsettled: bool = setting(
        False,
        "workers: also take tasks from requesters that do not settle on chain (their vouchers "
        "pay nothing on chain)",
    )
    claim_threshold_wei: int = setting(
        10**15,
        "workers: claim anchored earnings once this much is claimable, in wei",
        int_range(1, 2**63 - 1),
    )
    arrears_anchors: int = setting(
        3,
        "workers: take no new work from a requester while a line of ours waits unanchored "
        "through this many anchors that did not debit its pool; 0 turns it off",
        int_range(0, 10_000),
    )
    payout_min_wei: int = setting(
        10**15,
        "anchoring sentries: pay every worker owed at least this much (wei) its final earnings, "
        "in one batched transaction per epoch; 0 turns payouts off (workers claim themselves)",
        int_range(0, 2**63 - 1),
    )


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    p2p: P2pSettings = field(default_factory=P2pSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    market: MarketSettings = field(default_factory=MarketSettings)
    chain: ChainSettings = field(default_factory=ChainSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)


SECTIONS: dict[str, type[Any]] = {
    "node": NodeSettings,
    "api": ApiSettings,
    "p2p": P2pSettings,
    "worker": WorkerSettings,
    "market": MarketSettings,
    "chain": ChainSettings,
    "verify": VerifySettings,
}


def _offline_after_heartbeats(settings: Settings) -> str | None:
    p2p = settings.p2p
    if p2p.offline_after_s < 2 * p2p.announce_interval_s:
        # One lost announcement (gossip is lossy) must not mark a live peer offline.
        return f"at least twice p2p.announce_interval_s, i.e. >= {2 * p2p.announce_interval_s}"
    return None


def _rpc_complete(settings: Settings) -> str | None:
    chain = settings.chain
    if chain.backend == "rpc" and not (chain.rpc_url and chain.chain_id and chain.contract):
        return "chain.rpc_url, chain.chain_id and chain.contract all set when backend = rpc"
    return None


def _token_fits_backend(settings: Settings) -> str | None:
    chain = settings.chain
    if chain.token == TEST_TOKEN and chain.backend != "embedded":
        return '"test" only on the embedded chain; on rpc the address of the contract\'s token'
    if chain.token not in {"", TEST_TOKEN} and chain.backend != "rpc":
        return 'empty or "test" on the embedded chain (an address needs backend = rpc)'
    return None


def _mdns_needs_interface(settings: Settings) -> str | None:
    # zeroconf would otherwise bind every interface: the LAN to trust must be chosen.
    if settings.p2p.mdns and not settings.p2p.mdns_interface:
        return "an interface (e.g. eth0 or 192.168.1.10) when p2p.mdns is on"
    return None


def _quic_listen_needs_quic(settings: Settings) -> str | None:
    p2p = settings.p2p
    # Each address passed multiaddrs_check, so it is either TCP or ends in /quic-v1.
    quic = [a for a in p2p.listen if a.endswith("/quic-v1")]
    if quic and not p2p.quic:
        return f"TCP addresses only, as p2p.quic is off (set p2p.quic = true for {quic[0]})"
    return None


# Rules that relate several keys: (key blamed, check over the whole settings).
CROSS_CHECKS: tuple[tuple[str, Callable[[Settings], str | None]], ...] = (
    ("p2p.offline_after_s", _offline_after_heartbeats),
    ("chain.backend", _rpc_complete),
    ("chain.token", _token_fits_backend),
    ("p2p.mdns_interface", _mdns_needs_interface),
    ("p2p.listen", _quic_listen_needs_quic),
    (
        "verify.quorum",
        lambda s: (
            None
            if s.verify.quorum <= s.verify.sentries_per_task
            else "at most verify.sentries_per_task"
        ),
    ),
)
