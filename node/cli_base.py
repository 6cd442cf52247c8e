"""What every ``idlegrid`` command shares: errors with exit codes, options, output helpers.

Command modules (``node/cli.py``, ``node/cli_job.py``, ...) import from here, so none of them
imports another; ``node/cli.py`` assembles the command tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from config import ROLES, ConfigError
from consensus.errors import Invalid
from consensus.peer_id import short
from consensus.settlement.eip712 import chain_job_id, chain_task_id
from node.client import ApiRefused
from node.home import HomeError

short_peer = short  # how every command abbreviates a peer id (whole in ``market``, ``peers``)


class Failure(click.ClickException):
    exit_code = 1


class BadInput(click.ClickException):
    exit_code = 2


def failure(exc: HomeError) -> click.ClickException:
    """Exit 2 for what the user asked wrong (the daemon said 400 or 404), else 1."""
    if isinstance(exc, ApiRefused) and exc.bad_input:
        return BadInput(str(exc))
    return Failure(str(exc))


class Cli(click.Group):
    """Turns our errors into clean messages and the right exit codes, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadInput(f"config error: {exc}") from None
        except HomeError as exc:
            raise failure(exc) from None


home_option = click.option(
    "--home",
    "home_dir",
    type=click.Path(file_okay=False),
    help="data dir (default: $IDLEGRID_HOME, else the platform's user data dir)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
role_option = click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="role to play (repeat to combine)",
)
api_port_option = click.option(
    "--api-port", type=click.IntRange(0, 65535), help="local API port (0: pick a free one)"
)


def emit(as_json: bool, payload: Any, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(payload, indent=2) if as_json else human(payload))


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def job_arg(text: str, name: str = "JOB") -> bytes:
    """A market job id in hex (16 bytes), or a whole bytes32, as the contract's bytes32;
    ``name``: the argument's.

    Anything shorter is a prefix typed by mistake: padded, it would name another job, and
    money escrowed under it would wait there for nobody.
    """
    try:
        data = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise BadInput(
            f"{name}: {text!r} is not hex (a job id as `idlegrid job list` shows)"
        ) from None
    if len(data) not in (16, 32):
        raise BadInput(
            f"{name}: {text!r} is {len(data)} bytes: give the whole id, 32 hex digits as "
            "`idlegrid job list --json` shows (a prefix would name another job on chain)"
        )
    return chain_job_id(data)


def task_arg(text: str, name: str = "TASK") -> bytes:
    """``N`` or ``N#ATTEMPT`` as the contract's bytes32 task id; ``name``: the argument's."""
    task, _, attempt = text.partition("#")
    if not task.isdigit() or (attempt and not attempt.isdigit()):
        raise BadInput(f"{name}: {text!r} is not TASK or TASK#ATTEMPT, e.g. 0#1")
    try:
        return chain_task_id(int(task), int(attempt or 0))
    except Invalid as exc:
        raise BadInput(str(exc)) from None
