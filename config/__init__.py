"""Typed settings: TOML file + environment + CLI flags -> frozen dataclasses.

``node`` reads settings once at start-up and hands the values down; no other layer imports this
package.
"""

from config.load import ConfigError, Loaded, env_name, load
from config.schema import ROLES, ApiSettings, NodeSettings, Settings

__all__ = [
    "ROLES",
    "ApiSettings",
    "ConfigError",
    "Loaded",
    "NodeSettings",
    "Settings",
    "env_name",
    "load",
]
