"""Echo server: every text or binary message comes back to its sender.

Run it with ``hypercorn -k trio --bind 127.0.0.1:8000 examples.echo:app``.
"""

from __future__ import annotations

from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that echoes on every WebSocket and rejects plain HTTP with 404."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "websocket":
        websocket = WebSocket(scope, receive, send)
        async with websocket:  # structured mode: the receive pump runs for this block
            await websocket.accept()
            while True:
                message = await websocket.receive()
                if message["type"] != "websocket.receive":
                    break
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message["bytes"])
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"Not Found"})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
