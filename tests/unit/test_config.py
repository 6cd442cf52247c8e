"""Config: precedence, provenance, and an error naming the key for every kind of bad input."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from config import ConfigError, Settings, load
from config.render import commented_toml, flat


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "idlegrid.toml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    loaded = load(None, env={})
    assert loaded.settings == Settings()
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nport = 7000\n[node]\nlog_level = "debug"\n')
    loaded = load(
        path,
        env={"IDLEGRID_API_PORT": "7001", "IDLEGRID_NODE_ROLES": "worker, sentry"},
        flags={"api.port": (7002, "--api-port"), "node.name": (None, "--name")},
    )
    s = loaded.settings
    assert s.api.port == 7002
    assert s.node.roles == ("worker", "sentry")
    assert s.node.log_level == "debug"
    assert loaded.sources["api.port"] == "flag --api-port"
    assert loaded.sources["node.roles"] == "env IDLEGRID_NODE_ROLES"
    assert loaded.sources["node.log_level"] == f"file {path}"
    assert loaded.sources["node.name"] == "default"


def test_reserved_env_is_not_a_key() -> None:
    env = {"IDLEGRID_HOME": "/x", "IDLEGRID_PASSPHRASE": "p", "IDLEGRID_ANVIL": "/a", "PATH": "/b"}
    loaded = load(None, env=env)
    assert loaded.settings == Settings()


@pytest.mark.parametrize(
    ("text", "env", "key", "expected"),
    [
        ("[api]\nport = 70000\n", {}, "api.port", "0..65535"),
        ('[api]\nport = "80"\n', {}, "api.port", "an integer"),
        ("[api]\nport = true\n", {}, "api.port", "an integer"),
        ('[api]\nhost = "0.0.0.0"\n', {}, "api.host", "loopback"),
        ("[api]\nprot = 1\n", {}, "api.prot", "a known key"),
        ('[nodes]\nroles = ["worker"]\n', {}, "nodes", "a table among"),
        ('[node]\nroles = ["miner"]\n', {}, "node.roles", "unknown: miner"),
        ("[node]\nroles = []\n", {}, "node.roles", "at least one role"),
        ('[node]\nroles = ["worker", "worker"]\n', {}, "node.roles", "at most once"),
        ('[node]\nroles = "worker"\n', {}, "node.roles", "a list of strings"),
        ('[node]\nlog_level = "loud"\n', {}, "node.log_level", "one of debug"),
        ("", {"IDLEGRID_API_PORT": "eighty"}, "api.port", "an integer"),
        ("", {"IDLEGRID_API_PROT": "1"}, "IDLEGRID_API_PROT", "a known variable"),
        ("api = 3\n", {}, "api", "a table"),
        ('[p2p]\nlisten = ["localhost:4001"]\n', {}, "p2p.listen", "multiaddrs like"),
        ('[p2p]\nbootstrap = ["/ip4/1.2.3.4/tcp/1"]\n', {}, "p2p.bootstrap", "/p2p/<peer id>"),
        ('[p2p]\nannounce = ["/ip4/1.2.3.4/udp/1"]\n', {}, "p2p.announce", "TCP multiaddrs"),
        ('[p2p]\nannounce = ["/ip4/1.2.3.4/tcp/1/p2p/x"]\n', {}, "p2p.announce", "without /p2p/"),
        ("[p2p]\noffline_after_s = 5\n", {}, "p2p.offline_after_s", "twice p2p.announce"),
        ("[worker]\nprice_wei_per_s = -1\n", {}, "worker.price_wei_per_s", "an integer in 0.."),
        ("[api\n", {}, "(file)", "valid TOML"),
        ("[p2p]\n[p2p]\n", {}, "(file)", "already has a [p2p] table; put the key under"),
        ("[p2p]\nannounce_interval_s = 3600\n", {}, "p2p.announce_interval_s", "in 1..1200"),
        (
            '[worker]\nprice_wei_per_s = "100 gwei"\n',
            {},
            "worker.price_wei_per_s",
            "write 100000000000 for 100 gwei",
        ),
        ("", {"IDLEGRID_VERIFY_SLASH_WEI": "0.5 wei"}, "verify.slash_wei", "finer than one wei"),
        ('[chain]\ntoken = "usdc"\n', {}, "chain.token", "ERC-20 address"),
        ("[chain]\nfrom_block = -5\n", {}, "chain.from_block", "an integer in 0.."),
        ("", {"IDLEGRID_CHAIN_TOKEN": "0x" + "11" * 20}, "chain.token", "needs backend = rpc"),
        (
            '[chain]\ntoken = "test"\nbackend = "rpc"\nrpc_url = "http://x"\nchain_id = 1\n'
            'contract = "0x' + "22" * 20 + '"\n',
            {},
            "chain.token",
            "only on the embedded",
        ),
    ],
)
def test_bad_input_names_key_and_expectation(
    tmp_path: Path, text: str, env: dict[str, str], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), env=env)
    assert info.value.key == key
    assert expected in info.value.expected
    assert key in str(info.value)


def test_a_bad_value_is_shown_as_it_was_written() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"IDLEGRID_NODE_ROLES": "worker,sentr"})
    assert str(info.value).startswith('node.roles = ["worker", "sentr"] (from env')


def test_unknown_flag_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="a known key"):
        load(None, env={}, flags={"api.nope": (1, "--nope")})


def test_commented_toml_round_trips(tmp_path: Path) -> None:
    custom = load(None, env={"IDLEGRID_NODE_ROLES": "worker", "IDLEGRID_API_PORT": "9100"})
    text = commented_toml(custom.settings)
    assert "IDLEGRID_API_PORT" in text  # every key documents its variable
    tomllib.loads(text)
    reloaded = load(write(tmp_path, text), env={})
    assert flat(reloaded.settings) == flat(custom.settings)
    # defaults stay commented out, so a later release's default still applies
    assert reloaded.sources["api.host"] == "default"


def test_an_unknown_key_names_the_keys_it_is_close_to(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "[worker]\nprice = 5\n"), env={})
    assert "did you mean worker.price_wei_per_s or" in info.value.expected
    with pytest.raises(ConfigError) as info:
        load(None, env={"IDLEGRID_WORKER_PRICE": "5"})
    assert "IDLEGRID_WORKER_PRICE_WEI_PER_S" in info.value.expected
    with pytest.raises(ConfigError) as info:
        load(None, env={"IDLEGRID_ZZZ": "5"})
    assert "idlegrid config show" in info.value.expected
