"""An in-process, Trio-native test client: talk to an ASGI app's WebSockets without a server.

::

    async def test_echo():
        async with connect(app, "/chat/1?x=y", subprotocols=["chat"]) as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"

The app runs in a task of the client's own nursery and sees what hypercorn would send it (a
10-message receive queue, ``{"text": ..., "bytes": None}`` data messages, a scope with the
``websocket.http.response`` extension).  Every wait has a deadline (``timeout``, 5 s by
default) that raises ``trio.TooSlowError`` instead of hanging a test.  An exception in the app
is re-raised in the test as itself, never wrapped in an ``ExceptionGroup``:

- a close before accept raises ``WebSocketDisconnect`` with the app's code;
- a denial response raises ``WebSocketDenied`` with its status, headers and body;
- any other app error is raised from the call that was waiting, or when the block ends.

``connect(..., lifespan=True)`` runs the app's lifespan around the connection; ``run_lifespan``
does it around several.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from ._groups import open_owned_nursery
from ._types import ASGIApp, Message, Scope
from .datastructures import Headers
from .websockets import WebSocketDisconnect

__all__ = [
    "APP_FINISHED",
    "AppConnection",
    "LifespanFailed",
    "TestWebSocket",
    "WebSocketDenied",
    "connect",
    "run_lifespan",
]

APP_FINISHED: Message = {"type": "trio_asgi_ws.testing.app-finished"}
"""Queued on ``AppConnection.from_app`` after the app's last message, when it returns."""


class WebSocketDenied(Exception):
    """The app answered the handshake with an HTTP response instead of accepting it."""

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"WebSocket denied with HTTP {status_code}: {body[:200]!r}")
        self.status_code = status_code
        self.headers = Headers(raw=headers)
        self.body = body


class LifespanFailed(Exception):
    """The app reported ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``.

    The message names the event and carries the app's own message (a router sends the
    traceback); when the app then raised, as a router does, that error is the ``__cause__``.
    An app that answers with anything else, or returns without answering, also raises this.
    """


class AppConnection:
    """The server's side of one ASGI call: what the app receives, and what it has sent.

    The app's ``receive()`` reads a trio memory channel of ``queue_size`` slots (hypercorn's
    trio worker reads ahead the same way, so a client that sends more than the app reads blocks
    the "network"); its ``send()`` records each message in ``sent`` and queues it for the
    client side on ``from_app``.  With ``spec_24=True`` a send after ``client_gone`` raises
    ``OSError``, as ASGI spec 2.4 servers do; ``send_gate``, when set to an unset event, holds
    every send until it is set (a slow network).  ``run()`` calls the app and keeps an
    ``Exception`` it raises in ``error``; when it returns, ``finished`` is set and ``from_app``
    gets ``APP_FINISHED``.
    """

    def __init__(self, app: ASGIApp, scope: Scope, *, queue_size: float = 10, spec_24: bool = False) -> None:
        self.app = app
        self.scope = scope
        self.spec_24 = spec_24
        self.to_app, self._app_inbox = trio.open_memory_channel[Message](queue_size)
        self._app_outbox, self.from_app = trio.open_memory_channel[Message](math.inf)
        self.error: BaseException | None = None
        self.finished = trio.Event()
        self.sent: list[Message] = []
        self.client_gone = False
        self.send_gate: trio.Event | None = None

    async def receive(self) -> Message:
        """The app's ``receive``: the next message the client side put."""
        return await self._app_inbox.receive()

    async def send(self, message: Message) -> None:
        """The app's ``send``."""
        if self.send_gate is not None:
            await self.send_gate.wait()
        if self.client_gone and self.spec_24:
            raise OSError("client disconnected")
        self.sent.append(message)
        await self._app_outbox.send(message)

    async def run(self) -> None:
        """Run the app once; its ``Exception`` is kept in ``error``, never raised here."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as error:
            self.error = error
        finally:
            self.finished.set()
            self._app_outbox.send_nowait(APP_FINISHED)

    def raise_error(self) -> None:
        """Raise the app's error, once, if it had one."""
        error, self.error = self.error, None
        if error is not None:
            raise error


class _NurseryOwner:
    """An async context manager class that owns a nursery (see ``open_owned_nursery``)."""

    _owned: AbstractAsyncContextManager[trio.Nursery]
    nursery: trio.Nursery

    async def _open_nursery(self) -> None:
        self._owned = open_owned_nursery()
        self.nursery = await self._owned.__aenter__()

    async def _close_nursery(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return bool(await self._owned.__aexit__(exc_type, exc, tb))


class run_lifespan(_NurseryOwner):
    """Run the app's lifespan: startup on entry (yielding its state dict), shutdown on exit.

    A failed startup raises ``LifespanFailed`` from the ``async with`` (the block never runs), a
    failed shutdown raises it on the way out; an app that raises instead of answering raises its
    own error.  Each answer is waited for at most ``timeout`` seconds (``trio.TooSlowError``).
    """

    def __init__(self, app: ASGIApp, *, timeout: float = 5.0) -> None:
        self.state: dict[str, Any] = {}
        self._timeout = timeout
        self._task = AppConnection(
            app,
            {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state},
            queue_size=math.inf,
        )

    async def __aenter__(self) -> dict[str, Any]:
        """Run the startup; returns the state dict (pass it to ``connect(..., state=)``)."""
        await self._open_nursery()
        self.nursery.start_soon(self._task.run)
        try:
            await self._exchange("lifespan.startup", "lifespan.startup.complete")
        except BaseException as error:
            await self._close_nursery(type(error), error, error.__traceback__)
            raise
        return self.state

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Run the shutdown (a block left by an exception, cancellation included, skips it and
        cancels the app's lifespan task instead); a failed shutdown raises ``LifespanFailed``."""
        try:
            if exc is None:
                await self._exchange("lifespan.shutdown", "lifespan.shutdown.complete")
        finally:
            suppressed = await self._close_nursery(exc_type, exc, tb)
        return suppressed

    async def _exchange(self, request: str, expected: str) -> None:
        self._task.to_app.send_nowait({"type": request})
        with trio.fail_after(self._timeout):
            reply = await self._task.from_app.receive()
        if reply is APP_FINISHED:
            self._task.raise_error()
            raise LifespanFailed(f"the app returned instead of answering {request!r}")
        if reply["type"] != expected:
            # An app that reports a failure then raises it (Starlette's router, ours): wait for
            # that, within the deadline, so the error is chained to what the test sees.
            with trio.move_on_after(self._timeout):
                await self._task.finished.wait()
            cause, self._task.error = self._task.error, None
            raise LifespanFailed(f"{reply['type']}: {reply.get('message', '')}") from cause


class TestWebSocket(_NurseryOwner):
    """The client end of one in-process WebSocket; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        url: str = "/",
        *,
        subprotocols: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        lifespan: bool = False,
        state: Mapping[str, Any] | None = None,
        client: tuple[str, int] = ("testclient", 50000),
    ) -> None:
        self._app = app
        self._timeout = timeout
        self._lifespan = run_lifespan(app, timeout=timeout) if lifespan else None
        self._scope = _websocket_scope(url, subprotocols, headers or {}, dict(state or {}), client)
        self._task: AppConnection | None = None
        self._closed = False
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def scope(self) -> Scope:
        """The ASGI scope the app gets (mutable until ``async with`` is entered)."""
        return self._scope

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> TestWebSocket:
        """Start the app (and its lifespan, with ``lifespan=True``) and complete the handshake.

        Returns once the app accepted.  A close before accept raises ``WebSocketDisconnect``, a
        denial response ``WebSocketDenied``, an app that returns without either ``WebSocketDenied``
        (500, as hypercorn answers), an app error that error, and no answer within ``timeout``
        ``trio.TooSlowError``; in each case the app's task is cancelled and nothing is left running.
        """
        if self._lifespan is not None:
            self._scope["state"].update(await self._lifespan.__aenter__())
        await self._open_nursery()
        self._task = AppConnection(self._app, self._scope)
        self.nursery.start_soon(self._task.run)
        try:
            await self._handshake()
        except BaseException as error:
            await self._teardown(error)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Leave as a client does, then make sure the app has finished.

        A block that ends normally closes with 1000 (unless already closed) and waits up to
        ``timeout`` for the app to return (``trio.TooSlowError`` if it does not), then raises
        what the app raised, if anything.  A block left by an exception, cancellation included,
        tells the app the client vanished (a 1006 ``websocket.disconnect``), cancels it and
        lets that exception through.  The lifespan, if this connection runs it, shuts down last.
        """
        if exc is None:
            try:
                await self._finish()
            except BaseException as error:
                await self._teardown(error)
                raise
        return await self._teardown(exc)

    async def _teardown(self, exc: BaseException | None) -> bool:
        if not self._closed and self._task is not None:
            self._closed = True
            with contextlib.suppress(trio.WouldBlock):  # the client vanishes: tell the app
                self._task.to_app.send_nowait({"type": "websocket.disconnect", "code": 1006})
        try:
            tb = exc.__traceback__ if exc is not None else None
            suppressed = await self._close_nursery(type(exc) if exc is not None else None, exc, tb)
        finally:
            if self._lifespan is not None:
                await self._lifespan.__aexit__(type(exc) if exc else None, exc, None)
        return suppressed

    async def _finish(self) -> None:
        task = self._running()
        if not self._closed:
            await self.close()
        try:
            with trio.fail_after(self._timeout):
                await task.finished.wait()
        except trio.TooSlowError:
            raise trio.TooSlowError(f"the app did not finish within {self._timeout} s of the close") from None
        task.raise_error()

    async def _handshake(self) -> None:
        task = self._running()
        await task.to_app.send({"type": "websocket.connect"})
        message = await self._next_from_app()
        kind = message["type"]
        if message is APP_FINISHED:  # as hypercorn does when an app returns before accepting
            self._closed = True
            raise WebSocketDenied(500, [], b"")
        if kind == "websocket.accept":
            self.accepted_subprotocol = message.get("subprotocol")
            self.extra_headers = list(message.get("headers", []))
        elif kind == "websocket.close":
            self._closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        elif kind == "websocket.http.response.start":
            self._closed = True
            body = b""
            while True:
                part = await self._next_from_app()
                body += part.get("body", b"")
                if not part.get("more_body", False):
                    break
            raise WebSocketDenied(message["status"], list(message.get("headers", [])), body)
        else:
            raise RuntimeError(f"unexpected first message from the app: {message!r}")

    def _running(self) -> AppConnection:
        if self._task is None:
            raise RuntimeError("use the test WebSocket inside `async with connect(...)`")
        return self._task

    async def _next_from_app(self) -> Message:
        task = self._running()
        try:
            with trio.fail_after(self._timeout):
                message = await task.from_app.receive()
        except trio.TooSlowError:
            raise trio.TooSlowError(f"no message from the app within {self._timeout} s") from None
        except trio.EndOfChannel:
            message = APP_FINISHED
        if message is APP_FINISHED:
            task.from_app.close()
            task.raise_error()
        return message

    # -- sending -----------------------------------------------------------------------------

    async def _put(self, message: Message) -> None:
        task = self._running()
        if self._closed:
            raise RuntimeError("the test WebSocket is closed")
        with trio.fail_after(self._timeout):
            await task.to_app.send(message)

    async def send_text(self, data: str) -> None:
        """Send a text frame to the app.

        Waits while the app's 10-message queue is full, at most ``timeout`` (``trio.TooSlowError``);
        cancelled while waiting, nothing is sent.  After ``close()``, or once the app's close
        has been received, raises ``RuntimeError``.
        """
        await self._put({"type": "websocket.receive", "text": data, "bytes": None})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame to the app; waits, times out and cancels as ``send_text``."""
        await self._put({"type": "websocket.receive", "text": None, "bytes": bytes(data)})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send ``data`` as compact JSON, in a text frame (or a binary one with ``mode="binary"``)."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "binary":
            await self.send_bytes(text.encode("utf-8"))
        else:
            await self.send_text(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """The client goes away: the app receives ``websocket.disconnect`` with this code."""
        if not self._closed:
            await self._put({"type": "websocket.disconnect", "code": code, "reason": reason or ""})
            self._closed = True

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next raw message the app sent (``websocket.send`` or ``websocket.close``).

        A ``websocket.close`` is returned (and answered, as a client does, so the app's wait for
        it ends).  Once the app has finished, raises ``WebSocketDisconnect`` with the code it
        closed with (1011, as hypercorn sends, if it returned without closing), or what the app
        raised.  Nothing within ``timeout`` seconds raises ``trio.TooSlowError``.  Cancelling it
        loses nothing: the message goes to the next call.
        """
        message = await self._next_from_app()
        if message is APP_FINISHED:
            if self.close_code is not None:
                raise WebSocketDisconnect(self.close_code, self.close_reason)
            raise WebSocketDisconnect(1011, "the app returned without closing the WebSocket")
        if message["type"] == "websocket.close" and not self._closed:
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
            self._closed = True
            # Answer the close as a client does, so the app's wait for it ends.
            reply = {"type": "websocket.disconnect", "code": self.close_code}
            try:
                self._running().to_app.send_nowait(reply)
            except trio.WouldBlock:
                self.nursery.start_soon(self._running().to_app.send, reply)
        return message

    async def _receive_data(self) -> Message:
        message = await self.receive()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self) -> str:
        """The next text frame from the app.

        Raises ``WebSocketDisconnect`` (the app's code) when the app closed, ``TypeError`` for a
        binary frame, ``trio.TooSlowError`` when nothing arrives within ``timeout``.  Cancelling it
        loses nothing: the message goes to the next call.
        """
        message = await self._receive_data()
        if message.get("text") is None:
            raise TypeError(f"expected a text message from the app, got {message!r}")
        return str(message["text"])

    async def receive_bytes(self) -> bytes:
        """The next binary frame from the app; raises, times out and cancels as ``receive_text``."""
        message = await self._receive_data()
        if message.get("bytes") is None:
            raise TypeError(f"expected a binary message from the app, got {message!r}")
        return bytes(message["bytes"])

    async def receive_json(self, mode: str = "text") -> Any:
        """The next frame from the app (text, or binary with ``mode="binary"``), decoded as JSON."""
        if mode == "binary":
            return json.loads(await self.receive_bytes())
        return json.loads(await self.receive_text())


connect = TestWebSocket
"""Open an in-process WebSocket to an app: ``async with connect(app, "/path", ...) as ws``.

``connect(app, url="/", *, subprotocols=(), headers=None, timeout=5.0, lifespan=False,
state=None, client=("testclient", 50000))``: ``url`` may carry a query string and a
``ws://host`` or ``wss://host`` prefix; ``headers`` are added to the handshake's;
``lifespan=True`` runs the app's lifespan around the connection, ``state=`` passes one
``run_lifespan`` gave.  Entering returns a ``TestWebSocket`` once the app accepted (or raises
``WebSocketDisconnect``, ``WebSocketDenied`` or the app's error).

Every wait (the handshake, each send and receive, the app finishing after the close) is
bounded by ``timeout`` and raises ``trio.TooSlowError`` instead of hanging the test.  Leaving
the block normally closes with 1000 and waits for the app to return; leaving it by an
exception or a cancellation disconnects (1006) and cancels the app.  Nothing leaks as an
``ExceptionGroup``.
"""


def _websocket_scope(
    url: str,
    subprotocols: Sequence[str],
    headers: Mapping[str, str],
    state: dict[str, Any],
    client: tuple[str, int],
) -> Scope:
    parts = urlsplit(url)
    scheme = parts.scheme or "ws"
    host = parts.netloc or "testserver"
    raw_headers = [(b"host", host.encode("latin-1"))]
    raw_headers += [
        (b"sec-websocket-version", b"13"),
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
    ]
    if subprotocols:
        raw_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode("latin-1")))
    raw_headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    path = parts.path or "/"
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": scheme,
        "http_version": "1.1",
        "path": unquote(path),
        "raw_path": path.encode("ascii", "ignore"),
        "root_path": "",
        "query_string": parts.query.encode("latin-1"),
        "headers": raw_headers,
        "client": client,
        "server": (host.split(":")[0], 443 if scheme == "wss" else 80),
        "subprotocols": list(subprotocols),
        "state": state,
        "extensions": {"websocket.http.response": {}},
    }
