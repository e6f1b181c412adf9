"""``WebSocketEndpoint``: a class-based handler with Starlette's on_connect / on_receive / on_disconnect.

Set ``encoding`` to ``"text"``, ``"bytes"`` or ``"json"`` to have messages decoded before
``on_receive``; a frame of the wrong kind (or malformed JSON) closes the socket with 1003
(unsupported data) and raises ``RuntimeError``, as in Starlette.  ``on_disconnect`` always runs,
with the close code, shielded from the cancellation that a disconnect brings in structured mode
(bounded by the socket's ``close_timeout``).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any, Literal

import trio

from ._types import Message, Receive, Scope, Send
from .websockets import WebSocket, lifecycle

__all__ = ["WebSocketEndpoint"]

_UNSUPPORTED_DATA = 1003


class WebSocketEndpoint:
    """Subclass and override ``on_connect``, ``on_receive`` and ``on_disconnect``."""

    encoding: Literal["text", "bytes", "json"] | None = None

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f'WebSocketEndpoint needs a "websocket" scope, got {scope["type"]!r}')
        if self.encoding not in (None, "text", "bytes", "json"):
            raise ValueError(f"Unsupported 'encoding' attribute {self.encoding!r}")
        self.scope = scope
        self.receive = receive
        self.send = send

    def __await__(self) -> Generator[Any, None, None]:
        return self.dispatch().__await__()

    async def dispatch(self, websocket: WebSocket | None = None) -> None:
        """Run the connection: connect, one ``on_receive`` per message, then ``on_disconnect``."""
        if websocket is None:
            websocket = WebSocket(self.scope, self.receive, self.send)
        await self.on_connect(websocket)
        ending = lifecycle(websocket)
        close_code = 1000
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    close_code = int(message.get("code") or 1000)
                    break
                await self.on_receive(websocket, await self.decode(websocket, message))
        except trio.Cancelled:
            if ending.disconnect_code is not None:  # the pump saw the client leave
                close_code = ending.disconnect_code
            raise
        except Exception:
            close_code = 1011
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(ending.settings.close_timeout):
                await self.on_disconnect(websocket, close_code)

    async def decode(self, websocket: WebSocket, message: Message) -> Any:
        """Turn one ``websocket.receive`` message into what ``on_receive`` gets."""
        text, data = message.get("text"), message.get("bytes")
        if self.encoding == "text":
            if text is None:
                await websocket.close(code=_UNSUPPORTED_DATA)
                raise RuntimeError("Expected text websocket messages, but got bytes")
            return text
        if self.encoding == "bytes":
            if data is None:
                await websocket.close(code=_UNSUPPORTED_DATA)
                raise RuntimeError("Expected bytes websocket messages, but got text")
            return data
        if self.encoding == "json":
            try:
                return json.loads(text if text is not None else bytes(data or b"").decode("utf-8"))
            except ValueError:
                await websocket.close(code=_UNSUPPORTED_DATA)
                raise RuntimeError("Malformed JSON data received.") from None
        return text if text is not None else data

    async def on_connect(self, websocket: WebSocket) -> None:
        """Called first; accepts by default.  Close here instead to reject."""
        await websocket.accept()

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        """Called with each decoded message."""

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        """Called last, with the client's close code (1011 if a handler raised)."""
