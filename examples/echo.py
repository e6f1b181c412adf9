"""Echo server: every text or binary message comes back to its sender.

Run it with ``python -m trio_asgi_ws examples.echo:app`` (hypercorn's trio worker with this
library's safe defaults and fixes; see docs/reliability.md).
"""

from __future__ import annotations

from trio_asgi_ws import WebSocket
from trio_asgi_ws.routing import Router

app = Router()


@app.websocket("/")
async def echo(websocket: WebSocket) -> None:
    """Runs in structured mode: the block ends by itself when the client leaves."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])
