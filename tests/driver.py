"""An in-process ASGI server for one WebSocket connection, for fast tests without sockets.

It behaves like hypercorn's trio worker where that matters: the app's receive() reads a 10-slot
trio memory channel (so a client that sends more than the app reads blocks the "network"), data
messages carry both "text" and "bytes" keys (one of them None), and a disconnect arrives as
``websocket.disconnect`` with code 1006.  ``spec_24=True`` makes send() raise OSError once the
client has gone, as ASGI spec 2.4 servers do.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_asgi_ws._types import ASGIApp, Message, Scope

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


class FakeServer:
    """The server side of one connection: feed the app messages, read what it sent."""

    def __init__(
        self, scope: Scope, *, queue_size: int = 10, hypercorn_style: bool = True, spec_24: bool = False
    ) -> None:
        self.scope = scope
        self.hypercorn_style = hypercorn_style
        self.spec_24 = spec_24
        self._to_app, self._app_inbox = trio.open_memory_channel[Message](queue_size)
        self._app_outbox, self._from_app = trio.open_memory_channel[Message](math.inf)
        self.client_gone = False
        self.send_gate: trio.Event | None = None
        self.app_finished = trio.Event()
        self.app_error: BaseException | None = None
        self.sent: list[Message] = []

    # what the app sees
    async def receive(self) -> Message:
        return await self._app_inbox.receive()

    async def send(self, message: Message) -> None:
        if self.send_gate is not None:
            await self.send_gate.wait()
        if self.client_gone and self.spec_24:
            raise OSError("client disconnected")
        self.sent.append(message)
        await self._app_outbox.send(message)

    # what the test does
    async def put(self, message: Message) -> None:
        with trio.fail_after(DEADLINE):
            await self._to_app.send(message)

    def put_nowait(self, message: Message) -> None:
        self._to_app.send_nowait(message)

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
            return await self._from_app.receive()

    async def expect_sent(self, message_type: str) -> Message:
        message = await self.next_sent()
        assert message["type"] == message_type, message
        return message

    async def accepted(self) -> Message:
        """Connect, and return the app's accept message."""
        await self.connect()
        return await self.expect_sent("websocket.accept")

    async def wait_app(self) -> None:
        with trio.fail_after(DEADLINE):
            await self.app_finished.wait()


@asynccontextmanager
async def serve_app(app: ASGIApp, scope: Scope | None = None, **options: Any) -> AsyncIterator[FakeServer]:
    """Run ``app`` for one connection in a nursery; leaving waits for the app (bounded)."""
    server = FakeServer(scope if scope is not None else websocket_scope(), **options)

    async def run() -> None:
        try:
            await app(server.scope, server.receive, server.send)
        except Exception as error:
            server.app_error = error
        finally:
            server.app_finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield server
        await server.wait_app()
