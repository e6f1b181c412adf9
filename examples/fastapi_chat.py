"""Chat with rooms on the broadcast hub, as a FastAPI app whose WebSocket endpoint is structured.

Install the extra and run it through this library's server (hypercorn's trio worker)::

    pip install -e '.[fastapi]'
    python -m trio_asgi_ws examples.fastapi_chat:app

then open http://127.0.0.1:8000/ (the page of ``examples/chat.py``, served by FastAPI).  The hub
lives in the app's lifespan; set ``BROADCAST_URL=redis://127.0.0.1:6379/0`` to share rooms
between processes.  FastAPI validates the parameters (``name`` longer than 40 characters: the
handshake is refused) and injects the hub through ``Depends``; ``@structured`` gives the endpoint
this library's ``WebSocket``, so the client leaving cancels it and its ``forward`` task at once.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import fastapi
import trio
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse

from trio_asgi_ws import WebSocket
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.integrations.fastapi import structured

PAGE = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")
MAX_TEXT = 2000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with open_broadcast(os.environ.get("BROADCAST_URL", "memory://")) as hub:
        yield {"hub": hub}  # in every connection's state


app = FastAPI(lifespan=lifespan)


async def get_hub(websocket: fastapi.WebSocket) -> Broadcast:
    """A dependency: it gets FastAPI's own ``WebSocket``, as dependencies always do."""
    hub: Broadcast = websocket.state.hub
    return hub


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


@app.websocket("/ws/{room}")
@structured
async def chat(
    websocket: WebSocket,
    room: str,
    hub: Annotated[Broadcast, Depends(get_hub)],
    name: Annotated[str, Query(max_length=40)] = "anonymous",
) -> None:
    topic = f"chat:{room}"
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        forward = partial(hub.forward, topic, websocket, max_buffer=100, overflow="drop_oldest")
        await nursery.start(forward)  # subscribed once this returns
        await hub.publish(topic, {"system": f"{name} joined {room}"})
        try:
            async for text in websocket.iter_text():  # ends when the client leaves
                await hub.publish(topic, {"from": name, "text": text[:MAX_TEXT]})
        finally:
            with trio.CancelScope(shield=True):  # the block is cancelled once the client has gone
                await hub.publish(topic, {"system": f"{name} left"})
        nursery.cancel_scope.cancel()
