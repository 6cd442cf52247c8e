"""Logging: JSON lines to ``HOME/logs/node.log`` for machines, short lines on stderr for people."""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# py-libp2p logs normal shutdown at warning/error level (see shared notes); keep it out of the way.
_NOISY = ("libp2p", "multiaddr", "async_service", "web3", "urllib3")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed through ``extra=``: the structured part of a log line."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry |= extra_fields(record)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """One line for people: time, level, logger, message, then the fields as key=value."""

    converter = staticmethod(time.gmtime)  # UTC, as in node.log

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = super().format(record)
        return f"{line} {fields}" if fields else line


def setup(log_dir: Path, level: str, console: bool = True) -> None:
    """Configures the root logger once per process (a daemon, or a test starting one)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_dir / "node.log", maxBytes=10 * 2**20, backupCount=5, encoding="utf-8"
    )
    file_handler.setFormatter(JsonFormatter())
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(ConsoleFormatter())
        root.addHandler(stream)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.ERROR, root.level))
