"""Tutorial, step 1: a structured echo handler on a router.

Run it with ``python -m trio_asgi_ws examples.tutorial_echo:app`` and connect to
ws://127.0.0.1:8000/echo.
"""

from __future__ import annotations

from trio_asgi_ws import WebSocket
from trio_asgi_ws.routing import Router

app = Router()


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():  # ends when the client leaves
        await websocket.send_text(f"echo: {text}")
    # returning closes the socket with 1000
