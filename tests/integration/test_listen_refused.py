"""``node start`` on a listen address the OS refuses: exit 1 and one line naming what to change.

The refusal is raised inside the daemon's trio nursery, which wraps it in an ExceptionGroup; it
used to reach the terminal as a 110-line traceback (README: "never a traceback").
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.daemons import Daemon, cli_env, idlegrid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_second_node_on_the_same_port_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    addr = f"/ip4/127.0.0.1/tcp/{port}"
    first_home, second_home = tmp_path / "a", (tmp_path / "b").resolve()
    for home in (first_home, second_home):  # init keeps the address in idlegrid.toml
        assert idlegrid(home, "init", env=cli_env(IDLEGRID_P2P_LISTEN=addr)).returncode == 0
    env = cli_env()
    del env["IDLEGRID_P2P_LISTEN"]  # so the address comes from the file, as it would by default
    first = Daemon(first_home, (), env).wait_started()
    try:
        second = idlegrid(second_home, "node", "start", env=env)
        assert (second.returncode, second.stderr) == (
            1,
            f"Error: p2p.listen: {addr} is already in use (another node?): set p2p.listen in "
            f"{second_home / 'idlegrid.toml'} or IDLEGRID_P2P_LISTEN, "
            f"e.g. /ip4/127.0.0.1/tcp/{port + 1}\n",
        )
        assert not (second_home / "api.json").exists()
        assert idlegrid(first_home, "status", env=env).returncode == 0  # untouched
    finally:
        first.kill()


def test_an_address_of_another_machine_says_so_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert idlegrid(home, "init").returncode == 0
    elsewhere = "/ip4/192.0.2.1/tcp/4001"  # TEST-NET-1: never an address of this machine
    result = idlegrid(home, "node", "start", "--listen", elsewhere)
    assert (result.returncode, result.stderr) == (
        1,
        f"Error: p2p.listen: cannot listen on {elsewhere}: [Errno 99] Cannot assign requested "
        "address (not an address of this machine?): pass another --listen, "
        "e.g. /ip4/0.0.0.0/tcp/4001\n",
    )


def test_a_taken_api_port_says_so_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert idlegrid(home, "init").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = idlegrid(home, "node", "start", "--api-port", str(port))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: api.port (flag --api-port): 127.0.0.1:{port}: Address already in use "
        "(another node?)"
    )


def test_a_chain_that_does_not_answer_says_so_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert idlegrid(home, "init").returncode == 0
    env = cli_env(
        IDLEGRID_CHAIN_SETTLE="true", IDLEGRID_CHAIN_BACKEND="rpc", IDLEGRID_CHAIN_CHAIN_ID="31337",
        IDLEGRID_CHAIN_RPC_URL=f"http://127.0.0.1:{free_port()}",
        IDLEGRID_CHAIN_CONTRACT="0x" + "ab" * 20,
    )  # fmt: skip
    result = idlegrid(home, "node", "start", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: chain.rpc_url http://127.0.0.1:")
