"""Serving: hypercorn's trio worker with WebSocket-friendly settings and a graceful shutdown.

``await serve(app)`` runs hypercorn's trio worker on one process.  On SIGINT/SIGTERM (or when
``shutdown_trigger`` returns) it stops taking new WebSockets, closes every open one itself with
**1001 Going Away** (hypercorn alone would just drop them, and clients would see 1006), lets each
handler's structured block finish, and only then lets hypercorn stop, running the lifespan
shutdown.  Handlers that take longer than ``graceful_timeout`` are cancelled.

Defaults differ from hypercorn's where WebSockets need it: messages are limited to 1 MiB (not
16 MiB), pings go out every 20 s, and a connection that sends nothing, not even a pong, for
``read_timeout`` seconds is dropped, so dead peers are noticed.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve

from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GracefulShutdown", "build_config", "serve"]

logger = logging.getLogger("trio_asgi_ws")

GOING_AWAY = 1001
_LEFTOVER_GRACE = 1.0


class _Connection:
    """One WebSocket's send side, watched so shutdown knows whether and how to close it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.cancel_scope = trio.CancelScope()
        self.accepted = False
        self.closed = False
        self.going_away = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.close":
            if self.going_away and self.accepted:
                message = {**message, "code": GOING_AWAY, "reason": "server shutting down"}
            self.closed = True
        elif kind == "websocket.accept":
            self.accepted = True
        elif kind.startswith("websocket.http.response"):
            self.closed = True
        await self._send(message)


class GracefulShutdown:
    """ASGI middleware that can close every open WebSocket with 1001 before the server stops."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.closing = False
        self._live: set[_Connection] = set()
        self._all_done = trio.Event()
        self._all_done.set()

    @property
    def open_connections(self) -> int:
        return len(self._live)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if self.closing:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": GOING_AWAY})
            return
        connection = _Connection(send)
        self._live.add(connection)
        self._all_done = trio.Event() if len(self._live) == 1 else self._all_done
        try:
            with connection.cancel_scope:
                await self.app(scope, receive, connection.send)
        finally:
            if connection.going_away and connection.accepted and not connection.closed:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    try:
                        await connection.send({"type": "websocket.close", "code": GOING_AWAY})
                    except Exception as error:  # the client vanished meanwhile
                        logger.debug("close during shutdown failed: %r", error)
            self._live.discard(connection)
            if not self._live:
                self._all_done.set()

    async def close_all(self, grace: float) -> None:
        """Refuse new WebSockets, close the open ones with 1001, wait for their handlers."""
        self.closing = True
        live = list(self._live)
        if live:
            logger.info("Closing %d WebSocket(s) with 1001 Going Away", len(live))
        for connection in live:
            connection.going_away = True
            connection.cancel_scope.cancel()
        with trio.move_on_after(grace) as waited:
            await self._all_done.wait()
        if waited.cancelled_caught:
            logger.warning("%d WebSocket handler(s) still running after %.1f s", len(self._live), grace)


def build_config(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_message_size: int = 1024 * 1024,
    ping_interval: float | None = 20.0,
    read_timeout: int | None = 60,
    graceful_timeout: float = 10.0,
    **options: Any,
) -> Config:
    """A hypercorn ``Config`` for WebSockets; ``options`` are any other hypercorn settings."""
    if max_message_size < 1:
        raise ValueError(f"max_message_size must be positive, got {max_message_size!r}")
    if ping_interval is not None and read_timeout is not None and read_timeout <= ping_interval:
        raise ValueError(
            f"read_timeout ({read_timeout} s) must be longer than ping_interval ({ping_interval} s), "
            "or live but quiet clients are dropped"
        )
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = max_message_size
    config.websocket_ping_interval = ping_interval
    config.read_timeout = read_timeout
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through the root handlers, once
    for name, value in options.items():
        if name.startswith("_") or not hasattr(config, name):
            raise TypeError(f"unknown server option {name!r} (not a hypercorn Config setting)")
        setattr(config, name, value)
    return config


async def serve(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    handle_signals: bool = True,
    sockets: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until a signal or ``shutdown_trigger``.

    ``task_status.started`` reports the bound addresses (``["http://127.0.0.1:8000"]``), so
    ``await nursery.start(serve, app, "127.0.0.1", 0)`` tells you the port.  ``sockets`` is an
    already listening socket to serve on instead of binding ``host:port`` (worker processes
    share one this way).  ``options`` are passed to ``build_config``.
    """
    config = build_config(host, port, **options)
    tracker = GracefulShutdown(app)

    async def shut_down_gracefully() -> None:
        async with trio.open_nursery() as nursery:
            stop = trio.Event()

            async def wait_then_stop(wait: Callable[[], Awaitable[object]]) -> None:
                await wait()
                stop.set()

            if shutdown_trigger is not None:
                nursery.start_soon(wait_then_stop, shutdown_trigger)
            if handle_signals:
                nursery.start_soon(wait_then_stop, _termination_signal)
            await stop.wait()
            nursery.cancel_scope.cancel()
        await tracker.close_all(config.graceful_timeout)
        # Every WebSocket handler has finished.  What hypercorn still runs on their connections
        # (its ping loop sleeps a whole ping_interval before noticing a close) would hold the
        # shutdown for the full graceful_timeout, so leave it only a short grace.
        config.graceful_timeout = min(config.graceful_timeout, _LEFTOVER_GRACE)

    await worker_serve(
        ASGIWrapper(tracker),  # type: ignore[arg-type]  # hypercorn's TypedDict scopes vs. our mappings
        config,
        sockets=Sockets([], [sockets], []) if sockets is not None else None,
        shutdown_trigger=shut_down_gracefully,
        task_status=task_status,
    )


async def _termination_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("Received %s: shutting down", signal.Signals(signum).name)
            return
