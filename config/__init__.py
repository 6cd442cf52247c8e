"""Typed settings: TOML file + environment + CLI flags -> frozen dataclasses."""
