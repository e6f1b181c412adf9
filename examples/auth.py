"""Token authentication at the door: a missing or wrong token gets an HTTP 401, never a WebSocket.

The token may come as ``?token=...`` (browsers cannot set headers on WebSockets) or as an
``Authorization: Bearer ...`` header (other clients).  Tokens here are a fixed table; use your
own store.  Run it with ``python -m trio_asgi_ws examples.auth:app``.
"""

from __future__ import annotations

import hmac

from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.routing import Router

TOKENS = {"s3cret-token-for-ann": "ann"}

app = Router()  # same-origin pages and non-browser clients only (the default)


async def unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI HTTP response; ``send_denial_response`` sends it in place of the handshake."""
    body = b"a valid token is required"
    headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def user_for(websocket: WebSocket) -> str | None:
    token = websocket.query_params.get("token")
    authorization = websocket.headers.get("authorization", "")
    if token is None and authorization.lower().startswith("bearer "):
        token = authorization[len("bearer ") :]
    if token is None:
        return None
    for known, user in TOKENS.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return user
    return None


@app.websocket("/private")
async def private(websocket: WebSocket) -> None:
    user = user_for(websocket)
    if user is None:
        await websocket.send_denial_response(unauthorized)
        return
    await websocket.accept()
    await websocket.send_text(f"hello {user}")
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user}: {text}")
