"""The four echo apps the benchmarks compare, written to do the same work.

Each one accepts, then loops: receive a text or binary message and send the same back, until the
client disconnects.  They differ only in the layer between the handler and the ASGI callables:

- ``raw``: the ASGI ``receive``/``send`` callables, dicts in and out;
- ``plain``: ``trio_asgi_ws.WebSocket`` used like Starlette's (no ``async with``);
- ``structured``: ``trio_asgi_ws.WebSocket`` inside ``async with websocket:`` (the receive pump runs);
- ``starlette``: ``starlette.websockets.WebSocket`` in a plain ASGI callable (no Starlette app).

``APPS`` holds the bare websocket handlers (for the in-process instruction count); ``SERVED``
wraps each with a minimal lifespan handler, because hypercorn's ``serve()`` must not see an app
return on the lifespan scope.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.websockets import WebSocket as StarletteWebSocket

from trio_asgi_ws import WebSocket

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

CONTENDERS = ("raw", "plain", "structured", "starlette")
"""In the order the tables list them; ``raw`` is the baseline for ratios."""


async def raw(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def plain(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message["bytes"])


async def structured(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    async with websocket:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message["bytes"])


async def starlette(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    websocket = StarletteWebSocket(scope, receive, send)
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message["bytes"])


APPS: dict[str, App] = {
    "raw": raw,
    "plain": plain,
    "structured": structured,
    "starlette": starlette,
}


def _served(handler: App) -> App:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await handler(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app


SERVED: dict[str, App] = {name: _served(handler) for name, handler in APPS.items()}


class StepCounter(trio.abc.Instrument):
    """A ``trio.abc.Instrument`` counting task steps (each time a task is scheduled and runs).

    ``kind(task_name)`` names the bucket; the structured receive pump's task is always "pump".
    """

    def __init__(self, kind: Callable[[str], str]) -> None:
        self._kind = kind
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        name: str = task.name
        self.steps["pump" if name.startswith("trio_asgi_ws pump") else self._kind(name)] += 1
