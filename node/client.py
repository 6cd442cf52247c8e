"""The CLI's side of the local API: find the running daemon through its data dir and call it."""

from __future__ import annotations

import http.client
import json
from typing import Any

from node.home import Home, HomeError, read_api_info, running_pid


class NotRunning(HomeError):
    def __init__(self, home: Home) -> None:
        super().__init__(f"no idlegrid daemon is running in {home.root}: {start_hint(home)}")


def start_hint(home: Home) -> str:
    """The next step for a data dir whose daemon is not running (``init`` first if it is not
    a node's data dir yet)."""
    start = f"`idlegrid node start --home {home.root}`"
    if home.is_initialised():
        return f"start it with {start}"
    return f"create a node there with `idlegrid init --home {home.root}`, then {start}"


class ApiRefused(HomeError):
    """The daemon answered, refusing the request: ``status`` says whose fault (4xx: what was
    asked; 409: what the node is not running)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def bad_input(self) -> bool:
        """The request named something wrong (a malformed or unknown id, a bad spec)."""
        return self.status in (400, 404)


class ApiClient:
    """Calls the daemon that owns ``home``; the port and token are read from the data dir."""

    def __init__(self, home: Home, timeout_s: float = 10.0) -> None:
        self.home = home
        self.timeout_s = timeout_s

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Any) -> Any:
        info = read_api_info(self.home)
        if info is None or running_pid(self.home) is None:
            raise NotRunning(self.home)
        conn = http.client.HTTPConnection(info["host"], info["port"], timeout=self.timeout_s)
        headers = {"Authorization": f"Bearer {self.home.read_token()}"}
        data = None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = json.loads(response.read() or b"null")
        except (OSError, http.client.HTTPException) as exc:
            raise HomeError(f"cannot reach the daemon's API at port {info['port']}: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            error = payload.get("error") if isinstance(payload, dict) else payload
            route = path.split("?", maxsplit=1)[0]
            raise ApiRefused(response.status, f"{error} ({method} {route}: {response.status})")
        return payload
