"""Tutorial, step 2: chat rooms on the broadcast hub.

Run it with ``python -m trio_asgi_ws examples.tutorial_rooms:app`` and connect to
ws://127.0.0.1:8000/rooms/garden?name=ann from two terminals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_asgi_ws import WebSocket
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.routing import Router


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    async with open_broadcast("memory://") as hub:  # lives as long as the server
        yield {"hub": hub}  # becomes websocket.state.hub


app = Router(lifespan=lifespan)


@app.websocket("/rooms/{room}")
async def room(websocket: WebSocket) -> None:
    hub: Broadcast = websocket.state.hub
    topic = f"room:{websocket.path_params['room']}"
    name = websocket.query_params.get("name", "anonymous")
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.forward, topic, websocket)  # subscribed once this returns
        await hub.publish(topic, f"{name} joined")
        try:
            async for text in websocket.iter_text():
                await hub.publish(topic, f"{name}: {text}")
        finally:  # runs in a cancelled block when the client left: shield the await
            with trio.CancelScope(shield=True):
                await hub.publish(topic, f"{name} left")
        nursery.cancel_scope.cancel()  # stop forwarding
