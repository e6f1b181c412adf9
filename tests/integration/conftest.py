"""Run ASGI apps under hypercorn's trio worker, in-process, on a real loopback socket.

``serve`` is a factory fixture: ``server = await serve(app)`` starts ``hypercorn.trio.serve`` in a
nursery owned by the fixture, bound to 127.0.0.1 on a free port, and returns a ``Server`` with
``server.url("/path")``.  On teardown the fixture fires each server's shutdown trigger and waits
(bounded) for ``serve()`` to return, so a server that crashed fails the test that crashed it.

Every app is wrapped so that it answers the ``lifespan`` scope (hypercorn's ``serve()`` crashes
on an app that returns there) and so that ``/__alive`` is a raw-ASGI echo endpoint that does not
use the library under test: ``await server.assert_serves()`` proves the server still accepts and
serves a fresh connection.  Teardown fails the test if hypercorn logged an error.

``open_client(url, **options)`` is the client: ``trio_websocket.open_websocket_url`` semantics on a
TCP stream the helper owns and always closes (see its docstring for the trio-websocket leak).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import hypercorn.trio
import pytest
import trio
import trio_websocket
from hypercorn.config import Config

from trio_asgi_ws._types import ASGIApp, Receive, Scope, Send

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

DEADLINE = 5.0
"""Upper bound for any single wait in these tests: it stops hangs, it does not measure speed."""

ALIVE_PATH = "/__alive"

ERROR_LOG = logging.getLogger("tests.integration.hypercorn")
"""hypercorn's error log.  Being a Logger (not "-"), hypercorn uses it as is: records propagate to
pytest's log capture, and INFO ("Running on ...") stays below the root logger's WARNING level."""


def hypercorn_config(**options: Any) -> Config:
    """A hypercorn config for tests: loopback, free port, no access log, errors to ``logging``."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = ERROR_LOG
    config.graceful_timeout = 1.0
    for name, value in options.items():
        if not hasattr(config, name):
            raise AttributeError(f"hypercorn Config has no option {name!r}")
        setattr(config, name, value)
    return config


def port_of(binds: list[str]) -> int:
    """The port from what ``serve()`` reports to ``task_status.started``: ["http://127.0.0.1:N"]."""
    assert len(binds) == 1, binds
    scheme, _, address = binds[0].partition("://")
    assert scheme == "http", binds
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1", binds
    return int(port)


async def _alive_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI echo, independent of trio_asgi_ws, for checking that the server still works."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def with_test_routes(app: ASGIApp) -> ASGIApp:
    """``app`` plus lifespan support and the ``/__alive`` raw echo endpoint."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket" and scope["path"] == ALIVE_PATH:
            await _alive_echo(scope, receive, send)
        else:
            await app(scope, receive, send)

    return wrapped


async def start_hypercorn(nursery: trio.Nursery, app: ASGIApp, shutdown: trio.Event, **options: Any) -> int:
    """Start ``hypercorn.trio.serve(app)`` in ``nursery``; return the bound port."""
    config = hypercorn_config(**options)
    framework: Any = with_test_routes(app)  # hypercorn types its apps with its own TypedDicts
    binds = await nursery.start(
        partial(
            hypercorn.trio.serve,
            framework,
            config,
            shutdown_trigger=shutdown.wait,
            mode="asgi",
        )
    )
    return port_of(binds)


def ws_url(port: int, path: str = "/") -> str:
    assert path.startswith("/"), path
    return f"ws://127.0.0.1:{port}{path}"


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """``trio_websocket.open_websocket_url(url, **options)``, except that we own the TCP stream.

    trio-websocket 0.12 never closes its socket when the server closes the WebSocket first or
    rejects the handshake (it waits for the server's TCP close, then just stops reading), and the
    leaked socket's ResourceWarning fails whichever test the garbage collector happens to run in
    (warnings are errors here).  So: open the stream ourselves, hand it to
    ``trio_websocket.wrap_client_stream``, and always close it on the way out.  Like
    ``open_websocket_url``, a lone exception (``ConnectionRejected``...) is raised unwrapped.
    """
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.hostname is not None and parts.port is not None, url
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, parts.netloc, resource, **options
                )
                try:
                    yield ws
                finally:
                    await ws.aclose()  # close handshake (or, when cancelled, just the stream)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


async def assert_serves(port: int) -> None:
    """A fresh connection to the raw echo endpoint gets an echo: the server is up and serving."""
    with trio.fail_after(DEADLINE):
        async with open_client(ws_url(port, ALIVE_PATH)) as ws:
            await ws.send_message("still there?")
            assert await ws.get_message() == "still there?"


@dataclass
class Server:
    port: int
    shutdown: trio.Event = field(repr=False)

    def url(self, path: str = "/") -> str:
        """``ws://127.0.0.1:PORT/path``."""
        return ws_url(self.port, path)

    async def assert_serves(self) -> None:
        await assert_serves(self.port)


ServeFactory = Callable[..., Awaitable[Server]]


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """``server = await serve(app, **hypercorn_options)``; servers stop when the test ends.

    Teardown also fails the test if hypercorn logged an error (such as "Error in ASGI Framework",
    which is how an exception escaping the app shows up) while the servers ran.
    """
    servers: list[Server] = []
    errors = _ErrorRecords()
    ERROR_LOG.addHandler(errors)
    try:
        async with _serving(servers) as start:
            yield start
    finally:
        ERROR_LOG.removeHandler(errors)
    logged = [
        f"{record.getMessage()}: {record.exc_info[1]!r}" if record.exc_info else record.getMessage()
        for record in errors.records
    ]
    assert not logged, f"hypercorn logged errors: {logged}"


@asynccontextmanager
async def _serving(servers: list[Server]) -> AsyncIterator[ServeFactory]:
    async with trio.open_nursery() as nursery:

        async def start(app: ASGIApp, **options: Any) -> Server:
            shutdown = trio.Event()
            port = await start_hypercorn(nursery, app, shutdown, **options)
            server = Server(port, shutdown)
            servers.append(server)
            return server

        yield start
        for server in servers:
            server.shutdown.set()
        # serve() waits up to graceful_timeout for open connections; never hang the suite on it.
        nursery.cancel_scope.deadline = trio.current_time() + DEADLINE
    assert not nursery.cancel_scope.cancelled_caught, "hypercorn did not shut down in time"
