"""Chat rooms: path parameters, lifespan state and an origin check.

``ws://127.0.0.1:8000/rooms/{room}?name=ann``: every text message is sent to everyone in the room.
Each member gets a bounded queue and its own sender task, so a member that stops reading misses
messages (counted) instead of slowing the room down.  Origins allowed: pages served from the
same origin as the socket (whatever the port), clients that send no ``Origin`` (not browsers),
and those listed in ``ROOMS_ORIGINS`` (comma separated).

Run it with ``python -m trio_asgi_ws examples.rooms:app``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_asgi_ws import WebSocket
from trio_asgi_ws.routing import Router

MEMBER_QUEUE = 100


class Rooms:
    """Who is in which room; publishing never waits for a member."""

    def __init__(self) -> None:
        self.members: dict[str, set[trio.MemorySendChannel[str]]] = defaultdict(set)
        self.dropped = 0

    def publish(self, room: str, text: str) -> None:
        for queue in list(self.members[room]):
            try:
                queue.send_nowait(text)
            except trio.WouldBlock:  # that member is not reading: it misses this one
                self.dropped += 1


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"rooms": Rooms()}  # becomes websocket.state.rooms in every connection


def _origins() -> list[str]:
    """Pages on other origins allowed to connect (comma separated); same-origin pages always are."""
    return [origin.strip() for origin in os.environ.get("ROOMS_ORIGINS", "").split(",") if origin.strip()]


app = Router(lifespan=lifespan, allowed_origins=_origins())


@app.websocket("/rooms/{room}")
async def room(websocket: WebSocket) -> None:
    rooms: Rooms = websocket.state.rooms
    name = websocket.path_params["room"]
    who = websocket.query_params.get("name", "anonymous")
    await websocket.accept()
    queue, inbox = trio.open_memory_channel[str](MEMBER_QUEUE)
    rooms.members[name].add(queue)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_forward, inbox, websocket)
            rooms.publish(name, f"{who} joined")
            async for text in websocket.iter_text():
                rooms.publish(name, f"{who}: {text}")
            nursery.cancel_scope.cancel()
    finally:
        rooms.members[name].discard(queue)
        rooms.publish(name, f"{who} left")


async def _forward(inbox: trio.MemoryReceiveChannel[str], websocket: WebSocket) -> None:
    async for text in inbox:
        await websocket.send_text(text)
