"""The local HTTP API: JSON over HTTP/1.1 on a loopback address, guarded by a bearer token.

h11 parses and trio moves bytes; one request per connection keeps the server small (the CLI
makes one call per command). Every request must carry ``Authorization: Bearer <api.token>``,
and a Host header naming a loopback address, so that a web page in the operator's browser
cannot reach the API through DNS rebinding.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import trio

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose stubs shadow trio's own annotations for mypy;
    # they export TaskStatus from trio_typing only.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
REQUEST_TIMEOUT_S = 10
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class ApiError(Exception):
    """An error answered to the client with an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not JSON: {exc}") from None


class ApiListenError(OSError):
    """The API's address could not be bound: the operator's to fix, not a crash."""


Handler = Callable[[Request], Awaitable[Any]]
Routes = Mapping[tuple[str, str], Handler]


async def serve(
    host: str,
    port: int,
    token: str,
    routes: Routes,
    *,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves until cancelled; reports the bound port through ``task_status``.

    Raises:
        ApiListenError: ``host``:``port`` could not be bound (another node on it).
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ApiListenError(exc.errno, f"{host}:{port}: {exc.strerror}") from None
    bound = listeners[0].socket.getsockname()[1]
    log.info("api listening", extra={"host": host, "port": bound})

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                await _serve_one(stream, token, routes)
        finally:
            await stream.aclose()

    try:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners)
    finally:
        for listener in listeners:
            await listener.aclose()


async def _serve_one(stream: trio.SocketStream, token: str, routes: Routes) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        head, body = await _read_request(conn, stream)
        status, payload = await _respond(head, body, token, routes)
    except h11.RemoteProtocolError as exc:
        status, payload = 400, {"error": f"bad HTTP request: {exc}"}
    except ApiError as exc:
        status, payload = exc.status, {"error": exc.message}
    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        await _send(conn, stream, status, payload)


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes]:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                raise ApiError(400, "connection closed mid-request")
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ApiError(413, f"request body over {MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return head, bytes(body)
        else:
            raise ApiError(400, f"unexpected HTTP event {type(event).__name__}")


async def _respond(head: h11.Request, body: bytes, token: str, routes: Routes) -> tuple[int, Any]:
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
    if _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
        raise ApiError(403, "the local API answers loopback Host headers only")
    supplied = headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        raise ApiError(401, "missing or wrong API token (see HOME/api.token)")
    target = head.target.decode("latin-1")
    path, _, query = target.partition("?")
    handler = routes.get((head.method.decode(), path))
    if handler is None:
        raise ApiError(404, f"no route {head.method.decode()} {path}")
    return 200, await handler(Request(head.method.decode(), path, query, body))


def _host_name(value: str) -> str:
    """``127.0.0.1:8080`` -> ``127.0.0.1``; ``[::1]:8080`` -> ``[::1]``."""
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0]


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        ("connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers))
    out += conn.send(h11.Data(data=data))
    out += conn.send(h11.EndOfMessage())
    try:
        await stream.send_all(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("api client went away before the response")
