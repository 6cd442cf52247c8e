"""Multiaddr-valued settings are parsed at config load, and ``init`` says what it took from the
environment.

A typo in ``p2p.listen`` used to pass ``config show`` and end ``node start`` in a 158-line
traceback; it must stop at load with the key, the source and the parser's reason, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config import ConfigError, load
from node.cli import cli

PEER = "12D3KooWJAMRCBXuvsmazwbwdiYmTmAD2nRNfmbAFGf2qMrHaFZy"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("IDLEGRID_P2P_LISTEN", "/ip4/127.0.0.1/tcpp/0", "unknown protocol: tcpp"),
        ("IDLEGRID_P2P_LISTEN", "/ip4/999.0.0.1/tcp/4001", "is not IPv4"),
        ("IDLEGRID_P2P_LISTEN", "/ip4/0.0.0.0/tcp/70000", "not in range"),
        ("IDLEGRID_P2P_LISTEN", "/dns4/example.org/tcp/4001", "not /ip4|ip6/<ip>/tcp/<port>"),
        ("IDLEGRID_P2P_LISTEN", "/ip4/0.0.0.0/tcp/1,/ip4/1.2.3.4/tcp/", "missing value"),
        ("IDLEGRID_P2P_ANNOUNCE", "/ip4/203.0.113.7/tcpp/4001", "unknown protocol: tcpp"),
        ("IDLEGRID_P2P_ANNOUNCE", "/ip4/203.0.113.7/udp/4001", "not /ip4|ip6/<ip>/tcp/<port>"),
        ("IDLEGRID_P2P_BOOTSTRAP", f"/ip4/1.2.3.4/tcpp/4001/p2p/{PEER}", "unknown protocol"),
        ("IDLEGRID_P2P_BOOTSTRAP", "/ip4/1.2.3.4/tcp/4001/p2p/notapeerid", "Invalid CID"),
        ("IDLEGRID_P2P_BOOTSTRAP", f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}/tcp/1", "not /ip4"),
    ],
)
def test_a_malformed_multiaddr_names_key_source_and_reason(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={variable: value})
    key = "p2p." + variable.removeprefix("IDLEGRID_P2P_").lower()
    assert info.value.key == key
    assert info.value.source == f"env {variable}"
    assert reason in info.value.expected, info.value.expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IDLEGRID_P2P_LISTEN", ""),  # listen on nothing: a node reached through relays
        ("IDLEGRID_P2P_LISTEN", "/ip4/0.0.0.0/tcp/4001,/ip6/::/tcp/0"),
        ("IDLEGRID_P2P_ANNOUNCE", "/ip4/203.0.113.7/tcp/4001"),
        ("IDLEGRID_P2P_BOOTSTRAP", f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}"),
    ],
)
def test_good_multiaddrs_load(variable: str, value: str) -> None:
    load(None, env={variable: value})


def test_a_quic_listen_address_needs_quic_on() -> None:
    quic = {"IDLEGRID_P2P_LISTEN": "/ip4/0.0.0.0/udp/4001/quic-v1"}
    with pytest.raises(ConfigError, match=r"set p2p.quic = true") as info:
        load(None, env=quic)
    assert info.value.key == "p2p.listen"
    assert load(None, env=quic | {"IDLEGRID_P2P_QUIC": "true"}).settings.p2p.quic


def test_config_show_refuses_a_bad_listen_with_exit_2(tmp_path: Path) -> None:
    env = {"IDLEGRID_P2P_LISTEN": "/ip4/127.0.0.1/tcpp/0"}
    result = CliRunner().invoke(cli, ["config", "show", "--home", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        'Error: config error: p2p.listen = ["/ip4/127.0.0.1/tcpp/0"] (from env '
        "IDLEGRID_P2P_LISTEN): expected multiaddrs like /ip4/1.2.3.4/tcp/4001 (bad: "
        "/ip4/127.0.0.1/tcpp/0: unknown protocol: tcpp)\n"
    )


def test_init_says_which_settings_it_took_from_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "IDLEGRID_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
        "IDLEGRID_API_PORT": "0",  # the default: written commented out, so not taken
        "IDLEGRID_MARKET_BID_WINDOW_MS": "500",
    }
    result = CliRunner().invoke(cli, ["init", "--home", str(home)], env=env)
    assert result.exit_code == 0, result.output
    taken = [line.strip() for line in result.stdout.splitlines() if "(from IDLEGRID_" in line]
    assert taken == [
        'p2p.listen = ["/ip4/127.0.0.1/tcp/0"] (from IDLEGRID_P2P_LISTEN, saved in idlegrid.toml)',
        "market.bid_window_ms = 500 (from IDLEGRID_MARKET_BID_WINDOW_MS, saved in idlegrid.toml)",
    ]
    text = (home / "idlegrid.toml").read_text()
    assert '\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n' in text
    assert "\n# port = 0\n" in text
