"""Structured WebSockets in a Starlette app: a route whose endpoint gets this library's ``WebSocket``.

::

    from starlette.applications import Starlette
    from trio_asgi_ws import WebSocket
    from trio_asgi_ws.integrations.starlette import WebSocketRoute

    async def ticker(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:                                   # cancelled when the client leaves
            await websocket.send_json(await next_price())

    app = Starlette(routes=[WebSocketRoute("/ticker", ticker)], lifespan=lifespan)

Why a route class
-----------------
Starlette 1.x declares routes as objects in a list (it has no route decorators).  Its own
``WebSocketRoute`` calls a *function* endpoint with a Starlette ``WebSocket`` that it builds
itself, and treats any other endpoint as a raw ASGI app.  This ``WebSocketRoute`` is Starlette's,
handed an ASGI app of ours (``StructuredEndpoint``): it builds this library's ``WebSocket`` from
the raw ASGI ``receive`` and ``send`` and runs the endpoint as a route of
``trio_asgi_ws.routing`` runs one.  No Starlette ``WebSocket`` is made for it and nothing private
of Starlette's is touched; path matching and convertors, ``name`` and ``url_path_for``, ``Mount``,
route ``middleware`` and the app's lifespan stay Starlette's.

What the endpoint gets
----------------------
- **Structured mode** (unless ``structured=False``): the endpoint runs inside
  ``async with websocket:``.  The client leaving cancels it, even while it only sends; the socket
  is closed on the way out (1000 when it returned or was cancelled, 1011 when it raised, 1007 for
  ``InvalidJSON``, 1008 after a receive-buffer overflow, 1001 when ``serve()`` is stopping) and the
  client's close is awaited for at most ``close_timeout`` seconds.
- **Disconnects** raise ``trio_asgi_ws.WebSocketDisconnect``, which is *not* Starlette's class:
  an ``except starlette.websockets.WebSocketDisconnect`` clause in the endpoint never runs.  The
  exception ends the block quietly (close 1000, nothing logged) and ``finally:`` clauses run in
  the cancelled block (see docs/frameworks.md).
- **``starlette.exceptions.WebSocketException``** (``fastapi.WebSocketException`` is the same
  class) closes with its code and reason, or before ``accept()`` rejects the handshake (HTTP 403
  under hypercorn), as in Starlette.  It is turned into this library's ``WebSocketException``
  inside the block, so the block sends that close itself.
- **Any other exception** closes with 1011 (HTTP 500 before accept) and is logged once, with its
  traceback, at ERROR on the ``trio_asgi_ws`` logger; it is not re-raised into Starlette.  Its
  exception handlers would get a fresh Starlette ``WebSocket`` that still believes the socket is
  connecting, and a second close from them would reach a socket already closed.
- **Origins**: a handshake whose ``Origin`` is neither the page's own origin nor in
  ``allowed_origins`` is rejected before the endpoint runs (HTTP 403, one INFO log line), exactly
  as ``trio_asgi_ws.routing.Router`` does (``"*"`` turns the check off).  Starlette checks nothing.

Cancellation from outside (the server stopping) ends the endpoint like a client leaving, with
1001.  Nothing here starts a task of its own: the block's receive pump belongs to the connection's
``async with`` block, which belongs to the server's connection task.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.exceptions import WebSocketException as StarletteWebSocketException
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute as StarletteWebSocketRoute

from .._types import Receive, Scope, Send
from ..datastructures import Headers
from ..endpoints import WebSocketEndpoint
from ..exceptions import WebSocketException
from ..routing import OriginPolicy
from ..routing import WebSocketRoute as _LibraryRoute
from ..websockets import WebSocket, WebSocketClose

__all__ = ["Endpoint", "StructuredEndpoint", "WebSocketRoute"]

logger = logging.getLogger("trio_asgi_ws")

Endpoint = Callable[[WebSocket], Awaitable[None]]
"""An endpoint taking this library's ``WebSocket``."""


def _translating(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, with Starlette's ``WebSocketException`` raised as this library's."""

    async def call(websocket: WebSocket) -> None:
        try:
            await endpoint(websocket)
        except StarletteWebSocketException as error:
            raise WebSocketException(error.code, error.reason) from error

    return call


def endpoint_call(endpoint: Endpoint | type[WebSocketEndpoint]) -> Endpoint:
    """A function endpoint for ``endpoint``: a function as is, a ``WebSocketEndpoint`` dispatched.

    Anything else (Starlette's own ``WebSocketEndpoint`` included) raises ``TypeError`` here, when
    the route is made, not when a client connects.
    """
    if inspect.isclass(endpoint):
        if issubclass(endpoint, WebSocketEndpoint):
            endpoint_class = endpoint

            async def dispatch(websocket: WebSocket) -> None:
                await endpoint_class(websocket.scope, websocket.receive, websocket.send).dispatch(websocket)

            return dispatch
        raise TypeError(
            f"endpoint must be an async function taking trio_asgi_ws.WebSocket or a subclass of "
            f"trio_asgi_ws.endpoints.WebSocketEndpoint, got the class {endpoint!r}"
        )
    if not callable(endpoint):
        raise TypeError(f"endpoint must be an async function taking trio_asgi_ws.WebSocket, got {endpoint!r}")
    return endpoint


class StructuredEndpoint:
    """An ASGI app that runs a WebSocket endpoint as ``trio_asgi_ws.routing`` runs a routed one.

    Checks the ``Origin`` first (see the module docstring), then builds this library's
    ``WebSocket`` from the raw ASGI callables and runs the endpoint in its structured block (or
    plain, with ``structured=False``), with the router's close codes and error logging.
    Starlette's ``WebSocketException`` raised by the endpoint becomes this library's, so the
    block closes with its code.  Returns once the connection is over; never raises what the
    endpoint raised.  ``run()`` takes the endpoint per call (the FastAPI integration uses that).
    """

    def __init__(
        self,
        endpoint: Endpoint | None,
        *,
        name: str,
        structured: bool = True,
        websocket_options: Mapping[str, Any] | None = None,
        allowed_origins: Sequence[str | None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.structured = structured
        self.websocket_options = dict(websocket_options or {})
        self.origins = OriginPolicy(allowed_origins or ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection with ``endpoint`` (see ``run``); ``RuntimeError`` without one."""
        if self.endpoint is None:
            raise RuntimeError("this StructuredEndpoint has no endpoint of its own: call run()")
        await self.run(scope, receive, send, self.endpoint)

    async def run(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
        """Run ``endpoint`` on this connection; return once the connection is over."""
        if scope["type"] != "websocket":
            raise ValueError(f"a WebSocket route got a {scope['type']!r} scope")
        if not self.origins.allows(scope):
            origin = Headers(scope=scope).get("origin")
            logger.info("Rejected WebSocket %s from origin %r", scope.get("path"), origin)
            await WebSocketClose()(scope, receive, send)
            return
        route = _LibraryRoute(
            "/",
            _translating(endpoint),
            name=self.name,
            structured=self.structured,
            websocket_options=self.websocket_options,
        )
        await route.handle(scope, receive, send)


class WebSocketRoute(StarletteWebSocketRoute):
    """Starlette's ``WebSocketRoute``, whose endpoint gets this library's ``WebSocket``.

    ``endpoint`` is ``async def endpoint(websocket: trio_asgi_ws.WebSocket)`` or a subclass of
    ``trio_asgi_ws.endpoints.WebSocketEndpoint``.  ``path``, ``name`` and ``middleware`` are
    Starlette's; ``structured`` and ``websocket_options`` are those of
    ``trio_asgi_ws.routing.WebSocketRoute``; ``allowed_origins`` those of its ``Router``.  What
    happens on disconnect, cancellation and errors: see the module docstring.
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint | type[WebSocketEndpoint],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        structured: bool = True,
        websocket_options: Mapping[str, Any] | None = None,
        allowed_origins: Sequence[str | None] | None = None,
    ) -> None:
        route_name = name if name is not None else getattr(endpoint, "__name__", path)
        self.structured_endpoint = StructuredEndpoint(
            endpoint_call(endpoint),
            name=route_name,
            structured=structured,
            websocket_options=websocket_options,
            allowed_origins=allowed_origins,
        )
        super().__init__(path, self.structured_endpoint, name=route_name, middleware=middleware)
        self.endpoint = endpoint
