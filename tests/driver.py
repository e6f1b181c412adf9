"""An in-process ASGI server for one WebSocket connection, for fast tests without sockets.

It is the test client's own ``trio_asgi_ws.testing.AppConnection`` (a 10-slot receive channel
like hypercorn's trio worker, ``spec_24`` and ``send_gate``), with message-level helpers: data
messages carry both "text" and "bytes" keys (one of them None) as hypercorn sends them, and a
disconnect arrives as ``websocket.disconnect`` with code 1006 unless the test says otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_asgi_ws._types import ASGIApp, Message, Scope
from trio_asgi_ws.testing import APP_FINISHED, AppConnection

DEADLINE = 5.0


def websocket_scope(
    path: str = "/",
    *,
    query_string: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    extensions: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": headers if headers is not None else [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": subprotocols or [],
        "extensions": {"websocket.http.response": {}} if extensions is None else extensions,
    }
    scope.update(extra)
    return scope


class FakeServer(AppConnection):
    """The server side of one connection (the test client's own ``AppConnection``), with helpers
    to feed the app messages and read what it sent."""

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        *,
        queue_size: int = 10,
        hypercorn_style: bool = True,
        spec_24: bool = False,
    ) -> None:
        super().__init__(app, scope, queue_size=queue_size, spec_24=spec_24)
        self.hypercorn_style = hypercorn_style

    @property
    def app_finished(self) -> trio.Event:
        return self.finished

    @property
    def app_error(self) -> BaseException | None:
        return self.error

    # what the test does
    async def put(self, message: Message) -> None:
        with trio.fail_after(DEADLINE):
            await self.to_app.send(message)

    def put_nowait(self, message: Message) -> None:
        self.to_app.send_nowait(message)

    async def connect(self) -> None:
        await self.put({"type": "websocket.connect"})

    def data(self, payload: str | bytes) -> Message:
        if isinstance(payload, str):
            message: Message = {"type": "websocket.receive", "text": payload}
            if self.hypercorn_style:
                message["bytes"] = None
        else:
            message = {"type": "websocket.receive", "bytes": payload}
            if self.hypercorn_style:
                message["text"] = None
        return message

    async def send_data(self, payload: str | bytes) -> None:
        await self.put(self.data(payload))

    async def disconnect(self, code: int = 1006, reason: str | None = None) -> None:
        self.client_gone = True
        message: Message = {"type": "websocket.disconnect", "code": code}
        if reason is not None:
            message["reason"] = reason
        await self.put(message)

    async def next_sent(self) -> Message:
        with trio.fail_after(DEADLINE):
            message = await self.from_app.receive()
        assert message is not APP_FINISHED, "the app returned"
        return message

    async def expect_sent(self, message_type: str) -> Message:
        message = await self.next_sent()
        assert message["type"] == message_type, message
        return message

    async def expect_close(self, code: int, reason: str = "") -> Message:
        """The app's next message is a close with exactly this code and reason."""
        message = await self.expect_sent("websocket.close")
        assert (message.get("code"), message.get("reason")) == (code, reason), message
        return message

    async def accepted(self) -> Message:
        """Connect, and return the app's accept message."""
        await self.connect()
        return await self.expect_sent("websocket.accept")

    async def wait_app(self) -> None:
        with trio.fail_after(DEADLINE):
            await self.finished.wait()


@asynccontextmanager
async def serve_app(app: ASGIApp, scope: Scope | None = None, **options: Any) -> AsyncIterator[FakeServer]:
    """Run ``app`` for one connection in a nursery; leaving waits for the app (bounded)."""
    server = FakeServer(app, scope if scope is not None else websocket_scope(), **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        yield server
        await server.wait_app()


class TaskSteps(trio.abc.Instrument):
    """Counts the scheduler passes of the tasks called ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.steps += 1
