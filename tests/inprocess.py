"""Real nodes run inside a test's trio loop (libp2p on 127.0.0.1, sqlite, their services)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio

from config.schema import NodeSettings, P2pSettings, Settings
from node import identity
from node.daemon import NodeContext, run_node
from node.home import Home


async def start_node(
    nursery: trio.Nursery,
    root: Path,
    *,
    roles: tuple[str, ...] = ("requester",),
    bootstrap: NodeContext | None = None,
    **p2p: Any,
) -> NodeContext:
    """A fresh node in ``root``, listening on 127.0.0.1, bootstrapped to ``bootstrap``;
    ``p2p`` overrides :class:`P2pSettings` fields."""
    home = Home(root)
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    boot = () if bootstrap is None or bootstrap.network is None else (
        str(bootstrap.network.host.addrs[0]),
    )  # fmt: skip
    conf = Settings(
        node=NodeSettings(roles=roles),
        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=boot, **p2p),
    )
    keys = identity.load(home, lambda: None)
    ctx: NodeContext = await nursery.start(
        functools.partial(run_node, home, conf, keys, handle_signals=False)
    )
    return ctx
