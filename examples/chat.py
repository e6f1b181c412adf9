"""Chat with rooms, on the broadcast hub; the page at ``/`` is served by the same app.

Run it with ``python -m trio_asgi_ws examples.chat:app`` and open http://127.0.0.1:8000/.
One process uses the in-memory hub; set ``BROADCAST_URL=redis://127.0.0.1:6379/0`` and start
several (on several ports or hosts) to share rooms through Redis.

Each room keeps its last 50 messages (``history=50``): joining shows them, and a page whose
connection dropped reconnects with ``?since=<the last id it saw>`` and gets exactly what it missed
(or, when more than the history was missed, a ``reset`` and the latest 50).  Every message goes to
the page with its id, so each socket has its own sending loop rather than ``hub.forward`` (which
sends the published payload as it is: use it when that is all a client needs).  A reader that
stalls loses the oldest messages (``drop_oldest``, 100 buffered) instead of slowing the room down.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.broadcast import START, Broadcast, Subscription, open_broadcast
from trio_asgi_ws.routing import Router

PAGE = (Path(__file__).parent / "chat.html").read_bytes()
MAX_TEXT = 2000
HISTORY = 50
"""Messages each room keeps for pages that join or come back."""


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    async with open_broadcast(os.environ.get("BROADCAST_URL", "memory://"), history=HISTORY) as hub:
        yield {"hub": hub}


async def page(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /`` gets the chat page, ``GET /rooms/<room>`` the room's figures in this process as
    JSON (the page's live view of the hub); anything else over HTTP is a 404."""
    path = scope["path"] if scope["type"] == "http" else ""
    if path == "/":
        await _respond(send, 200, "text/html; charset=utf-8", PAGE)
    elif path.startswith("/rooms/") and len(path) > len("/rooms/"):
        hub: Broadcast = scope["state"]["hub"]
        room = hub.topic_stats(f"chat:{path[len('/rooms/'):]}")
        figures = {
            "subscribers": room.subscribers,
            "messages": room.messages,
            "delivered": room.delivered,
            "dropped": room.dropped,
            "buffered": room.buffered,
            "hub": str(hub.status),
        }
        await _respond(send, 200, "application/json", json.dumps(figures).encode())
    else:
        await _respond(send, 404, "text/plain", b"Not Found")


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Router(lifespan=lifespan, default=page)


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket) -> None:
    hub: Broadcast = websocket.state.hub
    room = websocket.path_params["room"]
    name = (websocket.query_params.get("name") or "anonymous")[:40]
    since = websocket.query_params.get("since")  # the last id a reconnecting page saw
    topic = f"chat:{room}"
    try:
        subscription = hub.subscribe(topic, max_buffer=100, overflow="drop_oldest", since=since or START)
    except ValueError:
        await websocket.close(1008, "since must be a message id")
        return
    await websocket.accept()
    async with subscription, trio.open_nursery() as nursery:
        if since and not subscription.recovered:
            await websocket.send_json({"reset": True, "system": "you missed too much: the latest messages"})
        nursery.start_soon(_send_each_with_its_id, subscription, websocket)
        await hub.publish(topic, {"system": f"{name} is back" if since else f"{name} joined {room}"})
        try:
            async for text in websocket.iter_text():
                await hub.publish(topic, {"from": name, "text": text[:MAX_TEXT]})
        finally:
            with trio.CancelScope(shield=True):
                await hub.publish(topic, {"system": f"{name} left"})
        nursery.cancel_scope.cancel()


async def _send_each_with_its_id(subscription: Subscription, websocket: WebSocket) -> None:
    """The room's messages, oldest first, each as ``{"id": ..., **message}``."""
    async for message in subscription:
        await websocket.send_text(json.dumps({"id": message.id, **message.json()}))
