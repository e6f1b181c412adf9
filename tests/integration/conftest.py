"""Run ASGI apps under hypercorn's trio worker, in-process, on a real loopback socket.

``serve`` is a factory fixture: ``server = await serve(app)`` starts ``hypercorn.trio.serve`` in a
nursery owned by the fixture, bound to 127.0.0.1 on a free port, and returns a ``Server`` with
``server.url("/path")``.  On teardown the fixture fires each server's shutdown trigger and waits
(bounded) for ``serve()`` to return, so a server that crashed fails the test that crashed it.

Every app is wrapped so that it answers the ``lifespan`` scope (hypercorn's ``serve()`` crashes
on an app that returns there) and so that ``/__alive`` is a raw-ASGI echo endpoint that does not
use the library under test: ``await server.assert_serves()`` proves the server still accepts and
serves a fresh connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hypercorn.trio
import pytest
import trio
import trio_websocket
from hypercorn.config import Config

from trio_asgi_ws._types import ASGIApp, Receive, Scope, Send

DEADLINE = 5.0
"""Upper bound for any single wait in these tests: it stops hangs, it does not measure speed."""

ALIVE_PATH = "/__alive"


def hypercorn_config(**options: Any) -> Config:
    """A hypercorn config for tests: loopback, free port, no access log, errors to ``logging``."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    # A Logger (not "-") is used as is: records propagate to pytest's log capture and INFO
    # ("Running on ...") stays below the root logger's WARNING level.
    config.errorlog = logging.getLogger("tests.integration.hypercorn")
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


async def start_hypercorn(
    nursery: trio.Nursery, app: ASGIApp, shutdown: trio.Event, **options: Any
) -> int:
    """Start ``hypercorn.trio.serve(app)`` in ``nursery``; return the bound port."""
    config = hypercorn_config(**options)
    binds = await nursery.start(
        partial(
            hypercorn.trio.serve,
            with_test_routes(app),
            config,
            shutdown_trigger=shutdown.wait,
            mode="asgi",
        )
    )
    return port_of(binds)


def ws_url(port: int, path: str = "/") -> str:
    assert path.startswith("/"), path
    return f"ws://127.0.0.1:{port}{path}"


async def assert_serves(port: int) -> None:
    """A fresh connection to the raw echo endpoint gets an echo: the server is up and serving."""
    with trio.fail_after(DEADLINE):
        async with trio_websocket.open_websocket_url(ws_url(port, ALIVE_PATH)) as ws:
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


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """``server = await serve(app, **hypercorn_options)``; servers stop when the test ends."""
    servers: list[Server] = []
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
