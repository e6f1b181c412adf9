"""Chat with rooms, on the broadcast hub; the page at ``/`` is served by the same app.

Run it with ``python -m trio_asgi_ws examples.chat:app`` and open http://127.0.0.1:8000/.
One process uses the in-memory hub; set ``BROADCAST_URL=redis://127.0.0.1:6379/0`` and start
several (on several ports or hosts) to share rooms through Redis.

Each socket subscribes to its room with ``hub.forward``: a reader that stalls loses the oldest
messages (``drop_oldest``, 100 buffered) instead of slowing the room down.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.routing import Router

PAGE = (Path(__file__).parent / "chat.html").read_bytes()
MAX_TEXT = 2000


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    async with open_broadcast(os.environ.get("BROADCAST_URL", "memory://")) as hub:
        yield {"hub": hub}


async def page(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /`` gets the chat page; anything else over HTTP is a 404."""
    if scope["type"] == "http" and scope["path"] == "/":
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"%d" % len(PAGE))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PAGE})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"Not Found"})


app = Router(lifespan=lifespan, default=page)


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket) -> None:
    hub: Broadcast = websocket.state.hub
    room = websocket.path_params["room"]
    name = (websocket.query_params.get("name") or "anonymous")[:40]
    topic = f"chat:{room}"
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        await nursery.start(_forward, hub, topic, websocket)
        await hub.publish(topic, {"system": f"{name} joined {room}"})
        try:
            async for text in websocket.iter_text():
                await hub.publish(topic, {"from": name, "text": text[:MAX_TEXT]})
        finally:
            with trio.CancelScope(shield=True):
                await hub.publish(topic, {"system": f"{name} left"})
        nursery.cancel_scope.cancel()


async def _forward(
    hub: Broadcast,
    topic: str,
    websocket: WebSocket,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    await hub.forward(topic, websocket, max_buffer=100, overflow="drop_oldest", task_status=task_status)
