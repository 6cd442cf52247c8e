"""The README documents every config key with its environment variable and default."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.load import all_keys, env_name
from config.render import flat, toml_value
from config.schema import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
DEFAULTS = flat(Settings())


@pytest.mark.parametrize("key", all_keys())
def test_every_config_key_is_documented(key: str) -> None:
    row = f"| `{key}` | `{toml_value(DEFAULTS[key])}` | `{env_name(key)}` |"
    assert row in README, f"README's config table lacks or misstates: {row}"
