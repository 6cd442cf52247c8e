"""The daemon: wiring of roles and services, local API, CLI entry point."""

__version__ = "0.1.0"
