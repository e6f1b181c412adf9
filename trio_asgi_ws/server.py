"""Serving: hypercorn's trio worker with WebSocket-friendly settings, hardened against hostile clients.

``await serve(app)`` runs hypercorn's trio worker on one process, with the corrections in
``_hypercorn_fixes`` applied (bounded memory per connection, clients that stop reading dropped,
sockets released at once, a shutdown that always ends; docs/reliability.md has the figures).

On SIGINT/SIGTERM (or when ``shutdown_trigger`` returns) it stops taking new WebSockets, closes
every open one itself with **1001 Going Away** (hypercorn alone would just drop them, and clients
would see 1006), lets each handler's structured block finish, and only then lets hypercorn stop,
running the lifespan shutdown.  Handlers that take longer than ``graceful_timeout`` are
cancelled; connections still open a second after that are aborted, so the process exits within
``graceful_timeout`` plus about a second whatever its clients do.  Further signals during the
shutdown are logged and ignored; a signal during start-up (before the lifespan startup has
finished) stops the server at once.

Defaults differ from hypercorn's where WebSockets need it: messages are limited to 1 MiB (not
16 MiB), compression is off (hypercorn always negotiates it), pings go out every 20 s, a
connection that sends nothing, not even a pong, for ``read_timeout`` seconds is dropped, and so
is one whose sends make no progress for ``send_timeout`` seconds.

Operations (docs/operations.md): ``metrics_port`` serves Prometheus metrics on ``/metrics`` (the
``metrics`` extra), and ``connection_log`` writes one INFO line per WebSocket at its end on the
``trio_asgi_ws.connections`` logger.  With neither (or with the log's logger not enabled for
INFO when ``serve()`` starts) nothing is counted and a message costs nothing extra.

If the app's lifespan startup fails (it sends ``lifespan.startup.failed``), nothing is served: no
socket is accepted on, and ``serve()`` raises ``StartupFailed`` carrying the app's message (a
router's holds the traceback).  ``python -m trio_asgi_ws`` logs it on one ERROR record and exits
with status 3.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve

from . import _hypercorn_fixes
from ._counters import CONNECTION_LOGGER, Counters, note_rejection
from ._hypercorn_fixes import Compression, GuardedConfig
from ._lifecycle import GOING_AWAY, GOING_AWAY_KEY
from ._types import ASGIApp, Message, Receive, Scope, Send
from ._worker_metrics import answer_snapshots

__all__ = ["GracefulShutdown", "StartupFailed", "build_config", "serve"]

logger = logging.getLogger("trio_asgi_ws")

_GOING_AWAY_CLOSE: Message = {"type": "websocket.close", "code": GOING_AWAY, "reason": "server shutting down"}
TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LEFTOVER_GRACE = 1.0
_APP_QUEUE_SIZE = 1
"""Messages hypercorn reads ahead of the app per connection (its default is 10): each may be a
whole ``max_message_size``, so this bounds what a client can make the server hold while its app is
busy.  A structured WebSocket's pump buffers on top of this, within its own bound.  A queue this
short is full while an HTTP app has not read its request, which hypercorn alone does not survive
(it waits for room for ``http.disconnect`` before taking the connection's next request): fix 11
in ``_hypercorn_fixes``."""
_ABORT_MARGIN = 0.2


class StartupFailed(Exception):
    """The app reported ``lifespan.startup.failed``: ``serve()`` stopped without serving.

    ``message`` is the app's own report (a router sends the failure's traceback); ``summary``
    is its last line, such as ``RuntimeError: no database``.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        lines = [line for line in message.splitlines() if line.strip()]
        self.summary = lines[-1].strip() if lines else "(the app gave no message)"
        super().__init__(f"lifespan startup failed: {self.summary}")


class _StartupWatch:
    """ASGI middleware that sees the app report a failed lifespan startup before hypercorn does.

    hypercorn 0.18's trio worker, sent ``lifespan.startup.failed``, raises ``LifespanFailureError``
    in its lifespan task; but that task's ``finally`` first wakes the worker waiting for startup,
    which binds, logs "Running on ..." and reports the server started before the error reaches
    it, and the error then leaves ``serve()`` wrapped in three exception groups.  It should stop
    before serving.  ``on_failure`` (which cancels the worker) runs before the message is passed
    on.  Tested in tests/integration/test_server.py (the startup failure tests).
    """

    def __init__(self, app: ASGIApp, on_failure: Callable[[str], None]) -> None:
        self.app = app
        self._on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watched_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                self._on_failure(str(message.get("message") or ""))
            await send(message)

        await self.app(scope, receive, watched_send)


class _Connection:
    """One WebSocket's send side, watched so shutdown knows whether it still needs a close."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.cancel_scope = trio.CancelScope()
        self.accepted = False
        self.closed = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.close":
            self.closed = True
        elif kind == "websocket.accept":
            self.accepted = True
        elif kind.startswith("websocket.http.response"):
            self.closed = True
        await self._send(message)


class GracefulShutdown:
    """ASGI middleware that can close every open WebSocket with 1001 before the server stops.

    Each WebSocket scope carries a ``trio.Event`` under ``GOING_AWAY_KEY``, set when the server
    stops: a ``WebSocket`` cancelled by the shutdown reads it and closes with 1001 itself (its
    close code is decided in one place, ``_lifecycle.close_for``).  A handler that was
    cancelled without closing (a plain ASGI or Starlette one) is closed here with 1001.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.closing = False
        self._going_away = trio.Event()
        self._live: set[_Connection] = set()
        self._all_done = trio.Event()
        self._all_done.set()

    @property
    def open_connections(self) -> int:
        """WebSockets whose app is running now (accepted or still in their handshake)."""
        return len(self._live)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; WebSockets are tracked so that ``close_all`` can reach them.

        Other scopes pass straight through.  During a shutdown a new WebSocket is refused (HTTP
        403, counted as rejected for ``shutdown``).  When the shutdown cancels a handler that
        accepted and did not close, its socket is closed here with 1001 (bounded by a second,
        shielded); a client that vanished meanwhile is only logged at DEBUG.
        """
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if self.closing:
            note_rejection(scope, "shutdown")
            await receive()  # websocket.connect
            await send(_GOING_AWAY_CLOSE)
            return
        connection = _Connection(send)
        scope[GOING_AWAY_KEY] = self._going_away
        self._live.add(connection)
        self._all_done = trio.Event() if len(self._live) == 1 else self._all_done
        try:
            with connection.cancel_scope:
                await self.app(scope, receive, connection.send)
        finally:
            if self.closing and connection.accepted and not connection.closed:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    try:
                        await connection.send(_GOING_AWAY_CLOSE)
                    except Exception as error:  # the client vanished meanwhile
                        logger.debug("close during shutdown failed: %r", error)
            self._live.discard(connection)
            if not self._live:
                self._all_done.set()

    async def close_all(self, grace: float) -> None:
        """Refuse new WebSockets, close the open ones with 1001, wait for their handlers."""
        self.closing = True
        self._going_away.set()
        live = list(self._live)
        if live:
            logger.info("Closing %d WebSocket(s) with 1001 Going Away", len(live))
        for connection in live:
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
    send_timeout: float | None = 10.0,
    compression: Compression = None,
    graceful_timeout: float = 10.0,
    **options: Any,
) -> GuardedConfig:
    """A hypercorn ``Config`` for WebSockets; ``options`` are any other hypercorn settings.

    ``send_timeout``: seconds a send may make no progress before the connection is aborted
    (None: never).  ``compression``: ``"deflate"`` to negotiate permessage-deflate with clients
    that offer it (inflation bounded by ``max_message_size``), None (the default) for none.
    """
    if max_message_size < 1:
        raise ValueError(f"max_message_size must be positive, got {max_message_size!r}")
    if send_timeout is not None and not send_timeout > 0:
        raise ValueError(f"send_timeout must be positive seconds or None, got {send_timeout!r}")
    if compression not in (None, "deflate"):
        raise ValueError(f"compression must be 'deflate' or None, got {compression!r}")
    if ping_interval is not None and read_timeout is not None and read_timeout <= ping_interval:
        raise ValueError(
            f"read_timeout ({read_timeout} s) must be longer than ping_interval ({ping_interval} s), "
            "or live but quiet clients are dropped"
        )
    config = GuardedConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = max_message_size
    config.websocket_ping_interval = ping_interval
    config.read_timeout = read_timeout
    config.max_app_queue_size = _APP_QUEUE_SIZE
    config.send_timeout = send_timeout
    config.compression = compression
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
    metrics_port: int | None = None,
    connection_log: bool = True,
    metrics_socket: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until a signal or ``shutdown_trigger``.

    ``task_status.started`` reports the bound addresses (``["http://127.0.0.1:8000"]``), so
    ``await nursery.start(serve, app, "127.0.0.1", 0)`` tells you the port.  ``sockets`` is an
    already listening socket to serve on instead of binding ``host:port`` (worker processes
    share one this way).  ``options`` are passed to ``build_config``.

    ``metrics_port``: serve Prometheus metrics on ``http://host:metrics_port/metrics`` (0: a free
    port, logged as "Metrics on ..."); needs the ``metrics`` extra.  The responder runs in
    ``serve()``'s nursery and stops with it.  ``connection_log``: one INFO line per WebSocket
    at its end on the ``trio_asgi_ws.connections`` logger, when that logger is enabled for INFO
    as ``serve()`` starts.  ``metrics_socket``: what ``--workers`` uses instead of a port: one
    end of a socket pair on which the supervisor asks for this worker's figures
    (``_worker_metrics``).

    Raises ``StartupFailed``, without having served anything, when the app's lifespan startup
    fails.
    """
    config = build_config(host, port, **options)
    log_connections = connection_log and logging.getLogger(CONNECTION_LOGGER).isEnabledFor(logging.INFO)
    if metrics_port is not None or metrics_socket is not None or log_connections:
        config.counters = Counters(log_connections=log_connections)
    responder: Callable[..., Awaitable[None]] | None = None
    if metrics_port is not None:
        from .metrics import serve_metrics  # prometheus_client only when asked for

        responder = serve_metrics

    tracker = GracefulShutdown(app)
    stop = trio.Event()
    worker_scope = trio.CancelScope()
    startup_failure: list[str] = []

    def startup_failed(message: str) -> None:
        startup_failure.append(message)
        worker_scope.cancel()

    if sockets is None:
        listening = None
    elif config.ssl_enabled:
        listening = Sockets([sockets], [], [])
    else:
        listening = Sockets([], [sockets], [])

    async def shut_down_gracefully() -> None:  # hypercorn awaits this; it runs in `nursery` below
        await stop.wait()
        await tracker.close_all(config.graceful_timeout)
        # Every WebSocket handler has finished or been cancelled.  What hypercorn still runs on
        # their connections (its ping loop, a send stuck on a client that stopped reading) could
        # hold the shutdown: give it a short grace, then abort what is left.
        config.graceful_timeout = min(config.graceful_timeout, _LEFTOVER_GRACE)
        nursery.start_soon(_abort_after, config.graceful_timeout + _ABORT_MARGIN, config.guard)

    with _hypercorn_fixes.applied():
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_stop_on_signals, stop)
            if shutdown_trigger is not None:
                nursery.start_soon(_set_when_returned, shutdown_trigger, stop)
            nursery.start_soon(config.guard.run)
            counters = config.counters
            if responder is not None and counters is not None:

                async def snapshot() -> dict[str, Any]:
                    assert counters is not None
                    return counters.snapshot()

                await nursery.start(responder, snapshot, host, metrics_port)
            if metrics_socket is not None and counters is not None:
                nursery.start_soon(answer_snapshots, metrics_socket, counters)
            with worker_scope:
                await _serve_unless_stopped_first(
                    partial(
                        worker_serve,
                        ASGIWrapper(_StartupWatch(tracker, startup_failed)),  # type: ignore[arg-type]
                        config,
                        sockets=listening,
                        shutdown_trigger=shut_down_gracefully,
                    ),
                    stop,
                    task_status,
                )
            nursery.cancel_scope.cancel()
    if startup_failure:
        raise StartupFailed(startup_failure[0])


async def _serve_unless_stopped_first(
    worker: Callable[..., Awaitable[None]],
    stop: trio.Event,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Run ``worker``; if ``stop`` is set before it starts serving, cancel it (nothing to close)."""
    serving = False

    def started(binds: list[str]) -> None:
        nonlocal serving
        serving = True
        task_status.started(binds)

    async with trio.open_nursery() as nursery:

        async def cancel_if_still_starting() -> None:
            await stop.wait()
            if not serving:
                logger.info("Stopped during start-up")
                nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_if_still_starting)
        await worker(task_status=_Started(started))
        nursery.cancel_scope.cancel()


class _Started:
    """A ``task_status`` that calls a function when the task reports it has started."""

    def __init__(self, callback: Callable[[list[str]], None]) -> None:
        self._callback = callback

    def started(self, value: list[str]) -> None:
        self._callback(value)


async def _set_when_returned(wait: Callable[[], Awaitable[object]], event: trio.Event) -> None:
    await wait()
    event.set()


async def _abort_after(seconds: float, guard: _hypercorn_fixes.ConnectionGuard) -> None:
    await trio.sleep(seconds)
    guard.abort_all()


async def _stop_on_signals(stop: trio.Event, *, task_status: trio.TaskStatus[None]) -> None:
    """Set ``stop`` on SIGINT/SIGTERM, for as long as the server runs; later signals are logged.

    Keeping the handlers installed matters: a second signal (Ctrl-C reaches a supervisor and its
    workers, which the supervisor then also signals) must not kill a worker that is closing its
    connections.  A supervisor starts its workers with these signals blocked, so that one
    arriving before the handlers exist waits for them; they are unblocked here.
    """
    with trio.open_signal_receiver(*TERMINATION_SIGNALS) as signals:
        if hasattr(signal, "pthread_sigmask"):  # not on Windows, where no supervisor blocks them
            signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATION_SIGNALS)
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                logger.info("Received %s again: already shutting down", name)
            else:
                logger.info("Received %s: shutting down", name)
                stop.set()
