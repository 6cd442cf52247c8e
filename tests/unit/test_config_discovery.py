"""Config keys of the discovery mechanisms: each refusal names its key."""

from __future__ import annotations

import pytest

from config import ConfigError
from config.load import load


def test_mdns_interface_must_exist_on_this_machine() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"IDLEGRID_P2P_MDNS_INTERFACE": "nope0"})
    assert info.value.key == "p2p.mdns_interface"
    assert "lo" in info.value.expected  # lists the interfaces there are


def test_mdns_interface_by_name_or_address() -> None:
    for value in ("lo", "127.0.0.1"):
        loaded = load(None, env={"IDLEGRID_P2P_MDNS": "1", "IDLEGRID_P2P_MDNS_INTERFACE": value})
        assert loaded.settings.p2p.mdns_interface == value


def test_mdns_on_needs_an_interface() -> None:
    with pytest.raises(ConfigError, match=r"p2p\.mdns_interface"):
        load(None, env={"IDLEGRID_P2P_MDNS": "true"})
